"""Vision towers behind one interface: pixels [B, 3, S, S] → patch tokens [B, num_patches, width].

A tower also exposes `width` and `num_patches`, and `adapt_state_dict` to fit a pretrained file to it.
New kinds register here; the SkyEye model never needs to know which one it holds.
"""

from __future__ import annotations

from torch import nn

from skyeye.model.config import VisionConfig
from skyeye.model.conv_tower import ConvTower
from skyeye.model.eva_vit import EvaViT

VISION_TOWERS: dict[str, type[nn.Module]] = {"eva_vit": EvaViT, "conv": ConvTower}


def build_vision_tower(cfg: VisionConfig) -> nn.Module:
    if cfg.kind not in VISION_TOWERS:
        raise ValueError(f"unknown vision.kind {cfg.kind!r}; known: {sorted(VISION_TOWERS)}")
    return VISION_TOWERS[cfg.kind](cfg)
