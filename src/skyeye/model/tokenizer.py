"""Tokenizers: LLaMA-2's from the user's LLaMA folder, or a small bundled BPE vocabulary.

The bundled vocabulary follows LLaMA's conventions (`<unk>`=0, `<s>`=1, `</s>`=2, byte-fallback tokens
`<0x00>`..`<0xFF>` next, `▁` marking word starts) so that one prompt builder and one tokenizer class,
transformers' `LlamaTokenizer`, serve every model size. Rebuild it with

    python -m skyeye.model.tokenizer --data-root ../shared/data --out src/skyeye/assets/tokenizer-tiny
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("skyeye") / "assets" / name))


def resolve_tokenizer_path(spec: str, base: Path | None = None) -> Path:
    """`bundled:NAME` → the package's asset; a relative path resolves against `base` (a config's folder)."""
    if spec.startswith("bundled:"):
        return bundled_path(spec.removeprefix("bundled:"))
    path = Path(spec)
    return path if path.is_absolute() or base is None else base / path


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {path}")
    if not (path / "tokenizer.json").is_file() and (path / "tokenizer.model").is_file() and not _has_sentencepiece():
        # transformers would fail with advice about tiktoken, which is wrong for LLaMA's tokenizer.model.
        raise ValueError(
            f"{path / 'tokenizer.model'} is a sentencepiece tokenizer, which needs the sentencepiece and protobuf "
            "packages: pip install sentencepiece protobuf"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no BOS/EOS token; SkyEye needs LLaMA's <s> and </s>")
    if tokenizer.pad_token_id is None:
        # Padding is masked out of attention and loss, so any existing id serves; <unk> avoids a new token.
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def _has_sentencepiece() -> bool:
    """Whether transformers can convert a bare sentencepiece `tokenizer.model` (SkyEye depends on both)."""
    from importlib.util import find_spec

    try:
        return find_spec("sentencepiece") is not None and find_spec("google.protobuf") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Trains a LLaMA-style BPE vocabulary of at most `vocab_size` entries (fewer if the text is small).

    Grid coordinates such as `<23>` are kept whole by the pre-tokenizer, so each is one token once learned:
    a small model then reads and writes a box as four tokens instead of a dozen characters.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def pre_tokenizer(split_words: bool):
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"<\d{1,3}>"), behavior="isolated"),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=split_words),
            ]
        )

    reserved = SPECIAL_TOKENS + BYTE_TOKENS
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizer(split_words=True)
    learner.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size - len(reserved), show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = {token: index for index, token in enumerate(reserved)}
    for token in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizer(split_words=False)
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def instruction_corpus() -> list[str]:
    """Template text every model must tokenise compactly: identifiers, image slots and grid boxes."""
    from skyeye.prompts import IDENTIFIERS, IMAGE_SLOT, INSTRUCTION_TEMPLATE

    lines = [INSTRUCTION_TEMPLATE.format(f"{IMAGE_SLOT} {ident}") for ident in IDENTIFIERS]
    boxes = [f"{{<{a}><{(a * 7) % 101}><{(a * 13) % 101}><{(a * 29) % 101}>}}" for a in range(101)]
    lines += [f"<p>object</p> {box}<delim>{box}" for box in boxes]
    return lines * 20


def _ucm_corpus(data_root: Path) -> list[str]:
    """UCM-Captions train captions and the RSIVQA-UCM lines about train images (val never leaks in)."""
    dataset = json.loads((data_root / "ucm_captions" / "dataset.json").read_text())
    train_ids = set()
    texts = []
    for image in dataset["images"]:
        if image["split"] == "train":
            train_ids.add(Path(image["filename"]).stem)
            texts += [s["raw"] for s in image["sentences"]]
    for name in ("ucm_vqa.txt", "ucm_res.txt"):
        for line in (data_root / "rsivqa_ucm" / name).read_text().splitlines():
            stem, _, rest = line.partition(":")
            if Path(stem.strip()).stem in train_ids:
                texts.append(rest.replace("?", "? ", 1))
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the small bundled LLaMA-style BPE tokenizer.")
    parser.add_argument("--data-root", type=Path, required=True, help="folder holding ucm_captions/, rsivqa_ucm/")
    parser.add_argument("--out", type=Path, required=True, help="output tokenizer folder")
    parser.add_argument("--vocab-size", type=int, default=2048)
    args = parser.parse_args(argv)
    tokenizer = train_tokenizer(instruction_corpus() + _ucm_corpus(args.data_root), args.vocab_size)
    tokenizer.save_pretrained(str(args.out))
    print(f"wrote {len(tokenizer)} tokens to {args.out}")


if __name__ == "__main__":
    main()
