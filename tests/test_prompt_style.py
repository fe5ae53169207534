"""The model's prompt style (`cfg.prompt_style`) shapes every prompt: answers, chat turns and training samples."""

from pathlib import Path

import pytest
from PIL import Image

from skyeye.data.record import Record
from skyeye.model.config import ConfigError
from skyeye.model.loading import load_model
from skyeye.train.config import AugmentConfig
from skyeye.train.samples import SampleMaker

from conftest import small_config


def _image():
    return Image.new("RGB", (64, 48), (30, 160, 90))


@pytest.mark.parametrize("style, opening", [("skyeye", "<s>[INST]"), ("minigptv2", "<s><s>[INST]")])
def test_ask_and_follow_up_turns_use_the_models_prompt_style(small_model, style, opening):
    small_model.cfg.prompt_style = style
    first = small_model.ask(_image(), "what is it?", task="vqa", max_new_tokens=3)
    second = small_model.ask(_image(), "and where?", history=first.conversation, max_new_tokens=3)
    assert first.prompt.startswith(opening + " <Img>")
    assert second.prompt.startswith(opening + " <Img>")
    assert second.prompt.endswith("</s><s>[INST] and where? [/INST]")
    batched = small_model.ask_many([_image()], ["what is it?"], tasks=["vqa"], max_new_tokens=3)
    assert batched[0].prompt == first.prompt and batched[0].text == first.text


@pytest.mark.parametrize("style", ["skyeye", "minigptv2"])
def test_training_samples_use_minigptv2s_training_format_whatever_the_inference_style(tokenizer, style):
    cfg = small_config(prompt_style=style)
    maker = SampleMaker(cfg, tokenizer, AugmentConfig(), max_length=200, seed=0, load_pixels=False)
    record = Record("x/train/conversation/0", "x", "train", "conversation", ["a.png"], [48, 40],
                    [{"user": "[caption] Describe.", "assistant": "fields"},
                     {"user": "[vqa] How many roads?", "assistant": "two"}])  # fmt: skip
    ids = maker(record, Path("."), 0, 0).encoded.input_ids
    bos = tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos, "one BOS first, as MiniGPT-v2 trains (its two-BOS prompt is eval only)"
    assert ids.count(bos) == 2, "the follow-up question opens with its own BOS"


def test_load_model_and_the_cli_override_the_prompt_style(tmp_path, capsys):
    import json

    from skyeye.cli import main

    assert load_model("tiny").cfg.prompt_style == "skyeye"
    assert load_model("tiny", prompt_style="minigptv2").cfg.prompt_style == "minigptv2"
    with pytest.raises(ConfigError, match="prompt_style 'llava'"):
        load_model("tiny", prompt_style="llava")
    _image().save(tmp_path / "scene.png")
    ask = ["ask", str(tmp_path / "scene.png"), "what is it?", "--model", "tiny", "--max-new-tokens", "2", "--json"]
    assert main([*ask, "--prompt-style", "minigptv2"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"].startswith("<s><s>[INST] <Img>")
    with pytest.raises(SystemExit):
        main([*ask, "--prompt-style", "llava"])
