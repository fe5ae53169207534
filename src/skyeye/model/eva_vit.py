"""EVA-CLIP ViT, the vision tower of MiniGPT-v2 / SkyEyeGPT.

Parameter names are those of the public `eva_vit_g.pth` (LAVIS / BLIP-2 release) so that file loads with
nothing missing. Shape facts: pre-norm blocks, LayerNorm eps 1e-6, one `qkv` Linear without bias plus
separate `q_bias` / `v_bias` (the key bias is fixed at zero), absolute position embedding, no layer
scale, no relative position bias, and no final norm: the tower returns the last block's output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from skyeye.model.config import VisionConfig


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, width * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        # A float layer takes the bias inside the product, rounded as in the original EVA code; an integer
        # layer (skyeye.model.quantize) has no float weight to hand to F.linear.
        qkv = F.linear(x, self.qkv.weight, bias) if isinstance(self.qkv, nn.Linear) else self.qkv(x) + bias
        qkv = qkv.reshape(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = Attention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EvaViT(nn.Module):
    """Returns patch tokens [B, num_patches, width]; the CLS token is used inside the tower, then dropped."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.num_patches = cfg.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        if not self.cls_token.is_meta:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels.to(self.cls_token.dtype))
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x[:, 1:]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fits a checkpoint to this tower: resizes `pos_embed` and drops blocks beyond `depth`.

        EVA-CLIP-g has 40 blocks; MiniGPT-v2 builds 39 and ignores the last, so extra blocks are expected.
        """
        state = {k: v for k, v in state.items() if _block_index(k) is None or _block_index(k) < self.cfg.depth}
        if "pos_embed" in state and state["pos_embed"].shape != self.pos_embed.shape:
            state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], self.num_patches)
        return state


def _block_index(key: str) -> int | None:
    parts = key.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() else None


def interpolate_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Bicubic resize (align_corners=False) of the patch grid; the CLS position is kept as is."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    old, new = math.isqrt(grid.shape[1]), math.isqrt(num_patches)
    if old * old != grid.shape[1] or new * new != num_patches:
        raise ValueError(f"pos_embed with {grid.shape[1]} patches cannot be resized to {num_patches}")
    width = grid.shape[-1]
    grid = grid.reshape(1, old, old, width).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, width).to(pos_embed.dtype)
    return torch.cat((cls, grid), dim=1)
