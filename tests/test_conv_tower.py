"""The conv tower behind the vision-tower interface: shapes, its grid order, and frozen batch norms."""

import pytest
import torch

from skyeye.model.config import SkyEyeConfig, VisionConfig
from skyeye.model.conv_tower import ConvTower, stage_channels
from skyeye.model.skyeye import SkyEye
from skyeye.settings import ConfigError

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


def _cell_fit_error(tokens: torch.Tensor, rows: range, columns: range) -> float:
    """Largest error of the best linear read-out of (row, column) from the tokens of those cells of a 32 x 32 grid."""
    where = torch.tensor([(row, column) for row in rows for column in columns], dtype=torch.float64)
    picked = tokens[[row * 32 + column for row in rows for column in columns]].double()
    features = torch.cat((picked, torch.ones(len(where), 1, dtype=torch.float64)), dim=1)
    solution = torch.linalg.lstsq(features, where).solution
    return (features @ solution - where).abs().max().item()


def test_with_cell_positions_each_token_tells_its_cell_even_where_the_image_is_uniform():
    # A uniform image: without positions the tokens of cells away from the padded border are identical, so
    # nothing downstream can tell where such a cell is; with them a linear read-out finds each one's row and column.
    uniform = torch.full((1, 3, 256, 256), 0.3)
    plain = ConvTower(conv_config(image_size=256)).eval()
    placed = ConvTower(conv_config(image_size=256, cell_positions=True)).eval()
    placed.load_state_dict(plain.state_dict())
    with torch.no_grad():
        without, with_positions = plain(uniform)[0], placed(uniform)[0]
    inner = range(6, 26)
    assert all(torch.equal(without[6 * 32 + 6], without[row * 32 + column]) for row in inner for column in inner)
    assert _cell_fit_error(without, inner, inner) > 5
    assert _cell_fit_error(with_positions, inner, inner) < 0.5  # rounded, the read-out names every cell
    with torch.no_grad():  # any input size: the tower phase pretrains at a smaller one
        assert placed(torch.randn(2, 3, 32, 32)).shape == (2, 16, 16)


def test_cell_positions_are_refused_where_they_do_not_apply():
    with pytest.raises(ConfigError, match="cell_positions"):
        SkyEyeConfig(vision=VisionConfig(cell_positions=True)).validate()
    SkyEyeConfig(vision=conv_config(cell_positions=True), merge_tokens=1).validate()


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


def test_conv_model_round_trips_through_a_checkpoint_with_its_statistics(tokenizer, tmp_path):
    from skyeye.model.loading import load_model

    model = _model(tokenizer).train()
    model.encode_images(torch.randn(4, 3, 32, 32) * 3 + 1)  # moves the running statistics off their defaults
    model.eval().save_pretrained(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode_images(pixels), loaded.encode_images(pixels))
