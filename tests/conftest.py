"""Shared fixtures: tiny models built from the real classes, and synthesized weight files."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from skyeye.model.config import LLMConfig, LoraSettings, SkyEyeConfig, VisionConfig
from skyeye.model.tokenizer import bundled_path, load_tokenizer

# Property tests assert behaviour, never time: hypothesis' default 200 ms deadline per example failed them on a
# loaded 2-core machine.
settings.register_profile("untimed", deadline=None)
settings.load_profile("untimed")

REAL_DATA = Path(os.environ.get("SKYEYE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def real_data(*parts: str) -> Path:
    """A path under the real shared data (../shared/data or $SKYEYE_DATA); skips the test when it is absent."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SKYEYE_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(bundled_path("tokenizer-tiny"))


def small_config(**changes) -> SkyEyeConfig:
    """Smaller than the tiny preset so that tests run in milliseconds; 56 px → 16 patches → 4 visual tokens."""
    cfg = SkyEyeConfig(
        name="test",
        vision=VisionConfig(image_size=56, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64),
        llm=LLMConfig(
            vocab_size=1536,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=4,
            max_position_embeddings=512,
        ),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        max_context_len=256,
        dtype="float32",
    )
    return dataclasses.replace(cfg, **changes).validate("test config")


def small_conv_config(image_size: int = 32) -> SkyEyeConfig:
    """`small_config` with a one-block conv tower of 8 px cells and 16 channels, and the bundled tokenizer."""
    cfg = small_config(tokenizer="bundled:tokenizer-tiny")
    cfg.vision.kind, cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.width = "conv", image_size, 8, 16
    cfg.vision.depth = 1
    return cfg.validate("test config")


class PhaseRuns:
    """Runs of a training phase whose every step calls `module.augmented` once: `runs(out, kill_at=N)` starts the
    phase afresh (seed 0) with `start(out) -> (model, report)` and kills it with KeyboardInterrupt at its N-th step;
    `calls` counts the steps of the last run. For the tests that a killed phase resumes where it stopped."""

    def __init__(self, monkeypatch, module, start):
        self.start, self.calls, self.kill_at = start, 0, None
        real = module.augmented

        def counted(*args):
            self.calls += 1
            if self.calls == self.kill_at:
                raise KeyboardInterrupt("killed")
            return real(*args)

        monkeypatch.setattr(module, "augmented", counted)

    def __call__(self, out: Path, kill_at: int | None = None):
        self.calls, self.kill_at = 0, kill_at
        torch.manual_seed(0)
        return self.start(out)


@pytest.fixture
def small_model(tokenizer):
    from skyeye.model.skyeye import SkyEye

    torch.manual_seed(0)
    return SkyEye(small_config(), tokenizer).eval()


@pytest.fixture
def lora_checkpoint(small_model, tmp_path):
    """`small_model` saved with a LoRA that is not the identity (lora_B starts at zero, which a merge would leave
    unseen): for what must merge it (inference loading, quantization)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in small_model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return small_model.save_pretrained(tmp_path / "lora")
