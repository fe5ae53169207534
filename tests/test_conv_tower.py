"""The conv tower behind the vision-tower interface: shapes, its grid order, and frozen batch norms."""

import pytest
import torch

from skyeye.model.config import VisionConfig
from skyeye.model.conv_tower import ConvTower, stage_channels
from skyeye.model.skyeye import SkyEye

from conftest import small_config


def conv_config(**changes) -> VisionConfig:
    return VisionConfig(**{"kind": "conv", "image_size": 32, "patch_size": 8, "width": 16, "depth": 1, **changes})


def test_tokens_follow_the_grid_row_major():
    cfg = conv_config()
    tower = ConvTower(cfg).eval()
    pixels = torch.randn(2, 3, 32, 32)
    tokens = tower(pixels)
    assert tokens.shape == (2, cfg.num_patches, cfg.width) == (2, 16, 16)
    grid = tower.blocks(tower.stem(pixels))
    assert grid.shape == (2, 16, 4, 4)
    assert torch.equal(tokens[:, 1 * 4 + 2], grid[:, :, 1, 2])  # row 1, column 2


def test_stage_channels_double_up_to_width_and_bad_shapes_are_refused():
    assert stage_channels(conv_config(patch_size=16, width=192)) == [24, 48, 96, 192]
    for changes, message in (({"patch_size": 12}, "power of two"), ({"image_size": 36}, "multiple of patch_size"),
                             ({"width": 18}, "divisible by 4")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            stage_channels(conv_config(**changes))


def _model(tokenizer) -> SkyEye:
    cfg = small_config(tokenizer="bundled:tokenizer-tiny")
    cfg.vision = conv_config()
    return SkyEye(cfg, tokenizer)


def test_a_frozen_tower_keeps_its_batch_norm_statistics_in_training_mode(tokenizer):
    model = _model(tokenizer)
    model.set_trainable(["alignment", "llm"])
    model.train()
    before = {k: v.clone() for k, v in model.visual_encoder.state_dict().items()}
    model.encode_images(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not model.visual_encoder.training and model.llama_model.training
    assert all(torch.equal(before[k], v) for k, v in model.visual_encoder.state_dict().items())

    model.set_trainable(["vision", "alignment", "llm"])
    model.train()
    model.encode_images(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert model.visual_encoder.training
    assert not torch.equal(before["stem.1.running_mean"], model.visual_encoder.stem[1].running_mean)


def test_freezing_the_tower_of_a_model_in_training_mode_puts_it_in_eval_mode_at_once(tokenizer):
    model = _model(tokenizer)
    model.set_trainable(["vision", "alignment", "llm"])
    model.train()
    assert model.visual_encoder.training
    model.set_trainable(["alignment", "llm"])  # no train() after it
    before = {k: v.clone() for k, v in model.visual_encoder.state_dict().items()}
    model.encode_images(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not model.visual_encoder.training and model.llama_model.training
    assert all(torch.equal(before[k], v) for k, v in model.visual_encoder.state_dict().items())


def test_conv_model_round_trips_through_a_checkpoint_with_its_statistics(tokenizer, tmp_path):
    from skyeye.model.loading import load_model

    model = _model(tokenizer).train()
    model.encode_images(torch.randn(4, 3, 32, 32) * 3 + 1)  # moves the running statistics off their defaults
    model.eval().save_pretrained(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode_images(pixels), loaded.encode_images(pixels))
