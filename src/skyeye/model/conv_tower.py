"""A small residual CNN behind the vision-tower interface, for presets trained from scratch on a CPU.

A ViT learns scenes poorly from the ~2k images of a remote-sensing caption set; a CNN's locality and
batch-normalised residual blocks learn them far faster. The tower keeps the spatial layout: the output
is one token per `patch_size` x `patch_size` cell of the image, row-major, as a ViT's patch tokens are.

    stem (3x3, stride 2) → stages of `depth` residual blocks, each stage halving the grid and doubling
    the channels, the last stage having `width` channels, until the grid is image_size / patch_size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skyeye.model.config import VisionConfig


class ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.shortcut: nn.Module = nn.Identity()
        if channels_in != channels_out or stride != 1:
            projection = nn.Conv2d(channels_in, channels_out, 1, stride, bias=False)
            self.shortcut = nn.Sequential(projection, nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


def stage_channels(cfg: VisionConfig) -> list[int]:
    """Channels of each stage; the first stage keeps the stem's stride-2 grid, the others halve it."""
    stride = cfg.patch_size
    if stride < 4 or stride & (stride - 1):
        raise ValueError(f"a conv tower needs patch_size a power of two >= 4, got {stride}")
    if cfg.image_size % stride:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {stride}")
    stages = stride.bit_length() - 1  # the stem halves once, every later stage once more
    if cfg.width % 2 ** (stages - 1):
        raise ValueError(f"width {cfg.width} must be divisible by {2 ** (stages - 1)} for patch_size {stride}")
    return [cfg.width // 2 ** (stages - 1 - i) for i in range(stages)]


class ConvTower(nn.Module):
    """Pixels [B, 3, S, S] → tokens [B, (S / patch_size)^2, width]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.num_patches = cfg.num_patches
        channels = stage_channels(cfg)
        stem = nn.Conv2d(3, channels[0], 3, 2, 1, bias=False)
        self.stem = nn.Sequential(stem, nn.BatchNorm2d(channels[0]), nn.ReLU())
        blocks, previous = [], channels[0]
        for number, width in enumerate(channels):
            for repeat in range(cfg.depth):
                stride = 2 if number > 0 and repeat == 0 else 1
                blocks.append(ResidualBlock(previous, width, stride))
                previous = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.blocks(self.stem(pixels.to(self.stem[0].weight.dtype)))
        return grid.flatten(2).transpose(1, 2)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state
