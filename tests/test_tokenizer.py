"""A LLaMA folder that ships only sentencepiece's `tokenizer.model` (no tokenizer.json) loads and tokenises
exactly as sentencepiece itself does."""

import io

import pytest

from skyeye.model.tokenizer import instruction_corpus, load_tokenizer

TEXTS = ["[INST] <Img>", "</Img> [vqa] how many planes are there? [/INST]", "[INST] and where? [/INST]"]


@pytest.fixture(scope="module")
def llama_like_folder(tmp_path_factory):
    """A small LLaMA-style BPE sentencepiece model: <unk>=0, <s>=1, </s>=2, byte fallback, dummy prefix."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(instruction_corpus() + ["how many planes are there", "and where is it"] * 20),
        model_writer=model,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    folder = tmp_path_factory.mktemp("llama") / "Llama-2-7b-chat-hf"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    return folder


@pytest.mark.parametrize("with_config", [False, True])
def test_a_sentencepiece_only_folder_loads_and_tokenises_like_sentencepiece(llama_like_folder, with_config, tmp_path):
    """Bare, or as older LLaMA conversions ship it: config.json and a tokenizer_config naming LlamaTokenizer."""
    import sentencepiece as spm
    from transformers import LlamaConfig

    if with_config:
        folder = tmp_path / "llama"
        folder.mkdir()
        (folder / "tokenizer.model").write_bytes((llama_like_folder / "tokenizer.model").read_bytes())
        LlamaConfig(vocab_size=400).save_pretrained(folder)
        (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
        llama_like_folder = folder

    reference = spm.SentencePieceProcessor(model_file=str(llama_like_folder / "tokenizer.model"))
    tokenizer = load_tokenizer(llama_like_folder)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 0)
    for text in TEXTS:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference.encode(text), text
        assert tokenizer.decode(reference.encode(text)) == text


def test_without_the_sentencepiece_libraries_the_error_says_what_to_install(llama_like_folder, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentencepiece" else real(name))
    with pytest.raises(ValueError, match=r"tokenizer\.model .*pip install sentencepiece protobuf") as err:
        load_tokenizer(llama_like_folder)
    assert "tiktoken" not in str(err.value)
