"""LoRA merged into the weights for inference: the same answers, and checkpoints keep LoRA apart."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from skyeye.model.checkpoint import CheckpointError
from skyeye.model.loading import load_model


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(count)]


def _logits(model, image) -> torch.Tensor:
    from skyeye.model.inputs import collate, encode
    from skyeye.prompts import Conversation

    segments = Conversation().ask("[vqa] What is in the image?").segments(model.cfg.prompt_style)
    batch = collate([encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image)], 0)
    pixels = model.cfg.vision.to_pixels([image])
    with torch.no_grad():
        return model(batch["input_ids"], batch["image_mask"], batch["attention_mask"], pixels=pixels).logits


def test_a_merged_model_answers_like_the_unmerged_one(lora_checkpoint):
    unmerged, merged = load_model(lora_checkpoint), load_model(lora_checkpoint, merge_lora=True)
    assert merged.lora_merged and not unmerged.lora_merged
    image = _images(1)[0]
    torch.testing.assert_close(_logits(merged, image), _logits(unmerged, image), rtol=1e-4, atol=1e-4)
    assert (_logits(unmerged, image) - _logits_without_lora(lora_checkpoint, image)).abs().max() > 1e-2, "LoRA matters"
    images, questions = _images(4), ["[caption] Describe the image.", "[vqa] Is there water?"] * 2
    answers = [a.text for a in unmerged.ask_many(images, questions, max_new_tokens=12)]
    assert [a.text for a in merged.ask_many(images, questions, max_new_tokens=12)] == answers


def _logits_without_lora(folder, image) -> torch.Tensor:
    model = load_model(folder)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.zero_()
    return _logits(model, image)


def test_merging_leaves_checkpoints_with_lora_apart_and_a_merged_model_refuses_to_save_or_train(
    lora_checkpoint, tmp_path
):
    merged = load_model(lora_checkpoint, merge_lora=True)
    with pytest.raises(CheckpointError, match="merged for inference"):
        merged.save_pretrained(tmp_path / "again")
    assert not (tmp_path / "again").exists()
    with pytest.raises(ValueError, match="merged for inference"):
        merged.train()
    load_model(lora_checkpoint).save_pretrained(tmp_path / "resaved")  # unmerged: written as it was read
    original = load_file(lora_checkpoint / "model.safetensors")
    resaved = load_file(tmp_path / "resaved/model.safetensors")
    assert original.keys() == resaved.keys() and all(torch.equal(original[k], resaved[k]) for k in original)


def test_the_commands_that_answer_load_merged(lora_checkpoint, monkeypatch):
    from skyeye import cli

    args = cli.build_parser().parse_args(["ask", "x.png", "what?", "--model", str(lora_checkpoint)])
    assert cli._load(args).lora_merged
