"""The skyeyegpt-7b layout scaled down for CPU benchmarks (imported by the other bench scripts).

Every part keeps the 7B preset's shapes (EVA-g blocks of width 1408 at 448 px, LLaMA blocks of width 4096,
the 32000-token vocabulary, LoRA r=64 on q/v); only the number of blocks is smaller, so per-block costs,
dtype behaviour and memory ratios are those of the real model.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import torch

from skyeye.model.config import SkyEyeConfig, load_preset


def scaled_config(vision_blocks: int = 4, llm_layers: int = 2, dtype: str = "bfloat16") -> SkyEyeConfig:
    """With the defaults: about 0.8B parameters (EVA-g 4 blocks, LLaMA-7B 2 layers + embeddings)."""
    real = load_preset("skyeyegpt-7b")
    return dataclasses.replace(
        real,
        name=f"7b-layout-{vision_blocks}v-{llm_layers}l",
        vision=dataclasses.replace(real.vision, depth=vision_blocks),
        llm=dataclasses.replace(real.llm, num_layers=llm_layers),
        tokenizer="bundled:tokenizer-tiny",  # 2,048 tokens inside the 32,000-row embedding: nothing downloaded
        dtype=dtype,
    ).validate("bench config")


def build(cfg: SkyEyeConfig, seed: int = 0):
    """Random weights, built directly in cfg.dtype (as `skyeye ask --model <preset>` does)."""
    from skyeye.model.loading import default_dtype
    from skyeye.model.skyeye import SkyEye
    from skyeye.model.tokenizer import load_tokenizer, resolve_tokenizer_path

    torch.manual_seed(seed)
    with default_dtype(getattr(torch, cfg.dtype)):
        model = SkyEye(cfg, load_tokenizer(resolve_tokenizer_path(cfg.tokenizer)))
    with torch.no_grad():  # a trained LoRA is not the identity: give lora_B values, so that merging matters
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.02)
    return model.eval()


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Each candidate once per round, rounds repeated: slow drifts of a shared machine hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times


def best(values: list[float]) -> float:
    """The fastest of the rounds: on a shared machine, the one least disturbed by other work."""
    return min(values)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def rss_status(key: str = "VmRSS:") -> int:
    """Bytes of this process's resident memory (VmRSS) or its peak (VmHWM), from /proc (Linux)."""
    with open(f"/proc/{os.getpid()}/status") as status:
        return int(next(line for line in status if line.startswith(key)).split()[1]) * 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def machine() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
