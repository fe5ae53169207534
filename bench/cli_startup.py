"""Wall time of a whole `skyeye ask` (start, load the bundled model, answer, exit) against floors.

Floors, each a fresh interpreter: `import torch, transformers` (the issue's floor; transformers imports
its modelling code lazily), then transformers' LLaMA model, which every SkyEye model is built on (the
bundled model has no LoRA, so peft is not imported), and with peft, which a LoRA checkpoint needs: no
SkyEye command can go below those. Runs are interleaved and the best of --rounds counts (the least disturbed
on a shared machine). Target for the first ratio: <= 1.0.

    python bench/cli_startup.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "scene.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(image)
        ask = ["-m", "skyeye.cli", "ask", str(image), "[caption] Describe.", "--max-new-tokens", "16"]
        commands = {
            "skyeye ask": [sys.executable, *ask],
            "import torch, transformers": [sys.executable, "-c", "import torch, transformers"],
            "+ LLaMA": [sys.executable, "-c", "import torch; from transformers import LlamaForCausalLM"],
            "+ LLaMA, peft": [sys.executable, "-c", "import torch, peft; from transformers import LlamaForCausalLM"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name].append(wall(command))
    best = {name: min(values) for name, values in times.items()}
    print(f"best of {args.rounds} interleaved rounds (bundled model, 16 new tokens):")
    for name, seconds in best.items():
        print(f"  {name:28} {seconds:6.2f} s   skyeye ask / this = {best['skyeye ask'] / seconds:.2f}")


if __name__ == "__main__":
    main()
