"""Peak memory of loading a model, as a multiple of the bytes of its weights, in each dtype.

A model of the 7B preset's layout scaled down (about 0.5B parameters by default) is saved as a float16
checkpoint folder (the 7B preset's dtype) and as a float16 Hugging Face LLaMA folder; each load runs in a
fresh process, which reports (peak RSS during the load - RSS before it) / bytes of the loaded tensors.
Cases run interleaved over --rounds; the median is printed. Target: <= 1.3 for every case. Linux only
(/proc/self/status, /proc/self/clear_refs).

    python bench/load_memory.py [--rounds 2] [--vision-blocks 2] [--llm-layers 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from scaled_7b import median, scaled_config

PROBE = """
import sys, torch
sys.path.insert(0, sys.argv[4])
from scaled_7b import reset_peak, rss_status
from skyeye.model.loading import load_model
from skyeye.model.release import load_llama
load_model("tiny")  # imports and first-use allocations: not what is measured
kind, source, dtype = sys.argv[1:4]
reset_peak()
before = rss_status()
if kind == "llama":
    model = load_llama(source, getattr(torch, dtype))[0]
else:
    model = load_model(source, dtype=None if dtype == "-" else dtype)
weights = sum(t.nbytes for t in model.state_dict().values())
print(weights, (rss_status("VmHWM:") - before) / weights)
"""


def write_sources(folder: Path, vision_blocks: int, llm_layers: int) -> dict[str, tuple[str, str, str]]:
    """Saves the checkpoint, the LLaMA folder and the preset config; returns the cases: name → probe arguments."""
    from transformers import LlamaForCausalLM

    from skyeye.model.skyeye import SkyEye, llama_config
    from skyeye.model.tokenizer import load_tokenizer, resolve_tokenizer_path

    cfg = scaled_config(vision_blocks, llm_layers, "float16")
    tokenizer = load_tokenizer(resolve_tokenizer_path(cfg.tokenizer))
    with torch.device("meta"):  # values do not matter to memory: zeros, written without building random weights
        model = SkyEye(cfg, tokenizer).to_dtype(torch.float16)
    model.to_empty(device="cpu")
    for tensor in model.state_dict().values():
        tensor.zero_()
    model.save_pretrained(folder / "checkpoint")
    del model
    with torch.device("meta"):
        llama = LlamaForCausalLM(llama_config(cfg)).to(torch.float16)
    llama.to_empty(device="cpu")
    for tensor in llama.state_dict().values():
        tensor.zero_()
    llama.save_pretrained(folder / "llama")
    tokenizer.save_pretrained(folder / "llama")
    scaled_config(vision_blocks, llm_layers, "bfloat16").to_yaml(folder / "preset.yaml")
    checkpoint, llama_folder = str(folder / "checkpoint"), str(folder / "llama")
    return {
        "checkpoint float16 (as saved)": ("model", checkpoint, "float16"),
        "checkpoint -> bfloat16": ("model", checkpoint, "bfloat16"),
        "checkpoint -> float32": ("model", checkpoint, "float32"),
        "LLaMA folder float16 -> bfloat16": ("llama", llama_folder, "bfloat16"),
        "LLaMA folder float16 -> float32": ("llama", llama_folder, "float32"),
        "preset built in bfloat16": ("model", str(folder / "preset.yaml"), "-"),
    }


def probe(kind: str, source: str, dtype: str) -> tuple[int, float]:
    command = [sys.executable, "-c", PROBE, kind, source, dtype, str(Path(__file__).parent)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    weights, ratio = run.stdout.split()[-2:]
    return int(weights), float(ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vision-blocks", type=int, default=2)
    parser.add_argument("--llm-layers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cases = write_sources(Path(scratch), args.vision_blocks, args.llm_layers)
        ratios: dict[str, list[float]] = {name: [] for name in cases}
        sizes: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, arguments in cases.items():
                sizes[name], ratio = probe(*arguments)
                ratios[name].append(ratio)
    print(f"peak RSS during the load / bytes of the loaded weights (median of {args.rounds}); target <= 1.3")
    for name in cases:
        print(f"  {name:34} {median(ratios[name]):5.2f}x   (weights {sizes[name] / 2**30:.2f} GiB)")
    print("(as saved, tensors stay memory-mapped: their pages are read when first used, and are the weights)")


if __name__ == "__main__":
    main()
