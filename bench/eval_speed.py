"""Benchmark: evaluation items/s with batched, KV-cached generation against one question at a time.

Asks the bundled model (or --model) to caption the same images both ways in one process and prints items/s
and the ratio. Images come from ../shared/data/ucm_captions when present (--data-root), else from generated
scenes, so the benchmark runs anywhere.

    python bench/eval_speed.py --items 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def images_for(data_root: Path, items: int, scratch: Path) -> list[str]:
    folder = data_root / "ucm_captions" / "imgs"
    if folder.is_dir():
        return [str(p) for p in sorted(folder.iterdir())[:items]]
    from PIL import Image

    from skyeye.data.synth import draw_scene

    paths = []
    for seed in range(items):
        path = scratch / f"{seed}.png"
        Image.fromarray(draw_scene(seed).image).save(path)
        paths.append(str(path))
    return paths


def timed(model, images: list[str], batch_size: int, max_new_tokens: int) -> tuple[float, list[str]]:
    prompts = ["Briefly describe this image."] * len(images)
    started = time.perf_counter()
    answers = model.ask_many([[i] for i in images], prompts, tasks=["caption"] * len(images), batch_size=batch_size,
                             max_new_tokens=max_new_tokens)  # fmt: skip
    return time.perf_counter() - started, [a.text for a in answers]


def main() -> None:
    from skyeye.model.loading import default_source, load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    model = load_model(args.model or default_source())
    with tempfile.TemporaryDirectory() as scratch:
        images = images_for(args.data_root, args.items, Path(scratch))
        timed(model, images[:2], 2, args.max_new_tokens)  # warm-up
        one_s, one = timed(model, images, 1, args.max_new_tokens)
        batched_s, batched = timed(model, images, args.batch_size, args.max_new_tokens)
    same = sum(a == b for a, b in zip(one, batched, strict=True))
    print(f"{len(images)} images, up to {args.max_new_tokens} new tokens, model {args.model or default_source()}")
    print(f"one at a time      {len(images) / one_s:8.2f} items/s")
    print(f"batches of {args.batch_size:<6}  {len(images) / batched_s:8.2f} items/s   ({one_s / batched_s:.2f}x)")
    print(f"identical answers: {same} of {len(images)} (greedy; padding can change a float rounding)")


if __name__ == "__main__":
    main()
