"""The fixed number line (model/number_line.py): visual cells and coordinate tokens share one position code."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from skyeye.boxes import GRID, coordinate_token
from skyeye.model.config import ConfigError, NumberLineSettings, VisionConfig
from skyeye.model.number_line import NumberLine, token_cells

from conftest import small_config


def _config(**changes):
    """small_config with room for the code (4 x 32 dimensions) and a 4 x 4 grid of one-patch visual tokens."""
    llm = dataclasses.replace(small_config().llm, hidden_size=128)
    vision = VisionConfig(image_size=56, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64)
    return small_config(llm=llm, vision=vision, merge_tokens=1, tokenizer="bundled:tokenizer-tiny", **changes)


def test_each_cells_code_points_at_the_coordinates_of_its_centre(tokenizer):
    cfg = _config(number_line=NumberLineSettings(visual=1.0, coordinates=1.0))
    line = NumberLine(cfg, tokenizer)
    ids = tokenizer.convert_tokens_to_ids([coordinate_token(k) for k in range(GRID + 1)])
    coordinates = line._tokens[ids]
    half = 64
    for cell, (x1, y1, x2, y2) in zip(line._visual, token_cells(cfg), strict=True):
        # A hidden state holding only the cell's x block (or y block) scores the coordinate tokens.
        for block, centre in ((slice(0, half), (x1 + x2) / 2), (slice(half, 2 * half), (y1 + y2) / 2)):
            alone = torch.zeros_like(cell)
            alone[block] = cell[block]
            best = int((coordinates @ alone).argmax())
            assert abs(best - centre) <= (x2 - x1) / 2, (best, centre)


def test_merged_tokens_cover_their_patches_row_major():
    cells = token_cells(small_config())  # 4 x 4 patches, 4 per token: each token is one row
    assert cells == [(0.0, row * 25.0, 100.0, (row + 1) * 25.0) for row in range(4)]


def test_text_without_coordinates_changes_only_the_coordinate_logits(tokenizer):
    from skyeye.model.skyeye import SkyEye

    torch.manual_seed(0)
    model = SkyEye(_config(), tokenizer).eval()
    ids = torch.tensor([tokenizer("a river with some buildings", add_special_tokens=False)["input_ids"]])
    image_mask = torch.zeros_like(ids, dtype=torch.bool)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = model(ids, image_mask, mask).logits
        model.set_number_line(NumberLineSettings(visual=2.0, coordinates=1.0))
        after = model(ids, image_mask, mask).logits
    coordinate_ids = tokenizer.convert_tokens_to_ids([coordinate_token(k) for k in range(GRID + 1)])
    others = torch.ones(before.shape[-1], dtype=torch.bool)
    others[coordinate_ids] = False
    assert torch.equal(before[..., others], after[..., others])
    assert not torch.allclose(before[..., coordinate_ids], after[..., coordinate_ids])


def test_visual_tokens_get_their_cells_code_and_a_saved_model_keeps_it(tokenizer, tmp_path):
    from skyeye.model.info import describe
    from skyeye.model.loading import load_model
    from skyeye.model.skyeye import SkyEye

    torch.manual_seed(0)
    model = SkyEye(_config(), tokenizer).eval()
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        plain = model.encode_images(pixels)
        model.set_number_line(NumberLineSettings(visual=3.0, coordinates=1.0))
        coded = model.encode_images(pixels)
    assert torch.allclose((coded - plain).norm(dim=-1), torch.full((16,), 3.0, dtype=plain.dtype), atol=1e-4)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.cfg.number_line == NumberLineSettings(visual=3.0, coordinates=1.0)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_images(pixels), coded, atol=1e-6)
    assert "number line (fixed position code of length 3 on visual tokens" in describe(tmp_path / "ckpt")


def test_settings_errors_are_named(tokenizer):
    from skyeye.model.skyeye import SkyEye

    with pytest.raises(ConfigError, match="number_line.visual must be >= 0"):
        _config(number_line=NumberLineSettings(visual=-1.0))
    model = SkyEye(_config(number_line=NumberLineSettings(coordinates=1.0)), tokenizer)
    installed = model.number_line
    model.set_number_line(NumberLineSettings(coordinates=1.0))  # the one it has: a later stage may name it
    assert model.number_line is installed
    with pytest.raises(ConfigError, match="has a number line already"):
        model.set_number_line(NumberLineSettings(visual=1.0))
    narrow = small_config(tokenizer="bundled:tokenizer-tiny", number_line=NumberLineSettings(visual=1.0))
    with pytest.raises(ValueError, match="hidden_size >= 128"):
        SkyEye(narrow, tokenizer)
