"""Frozen-tower features computed once per image and reused every epoch (`cache_visual: true`).

The vision tower and `ln_vision` do not train, so their output for an image never changes; only the
alignment layer and the LLM run per step. The cache holds the tower's tokens before the merge and the
alignment layer (which do train), in the model's dtype, in memory: for the tiny preset 64 KB per image.
"""

from __future__ import annotations

import torch

from skyeye.images import load_image


class VisualCache:
    def __init__(self, model, paths: list[str], batch_size: int = 32, progress: bool = True):
        unique = list(dict.fromkeys(paths))
        self.position = {path: i for i, path in enumerate(unique)}
        vision = model.cfg.vision
        chunks = []
        steps = range(0, len(unique), batch_size)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="caching visual features", unit=" batches")
        with torch.no_grad():
            for start in steps:
                pixels = vision.to_pixels([load_image(path).image for path in unique[start : start + batch_size]])
                chunks.append(model.visual_features(pixels.to(model.device, model.dtype)).cpu())
        self.features = torch.cat(chunks) if chunks else torch.empty(0)

    def __len__(self) -> int:
        return len(self.position)

    def lookup(self, paths: list[str]) -> torch.Tensor:
        return self.features[[self.position[path] for path in paths]]
