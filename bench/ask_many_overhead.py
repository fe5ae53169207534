"""`ask_many` from image files against the raw model work it wraps (tower + `generate`), at batch 16.

"raw" is what a hand-written loop costs with everything prepared beforehand: the pixels and the token
batch of each batch already in memory, then `model.embed` and `llama_model.generate`. "ask_many" starts
from JPEG files and returns Answers (decoding, resizing, prompts, tokens, detokenising, boxes); the next
batch's images are read in a worker thread while the current one generates. "batch by batch" calls
ask_many once per batch, so nothing overlaps: what the worker thread saves. Rounds are interleaved, every
call generates exactly --new-tokens tokens, the best round counts (the least disturbed on a shared
machine) and the ratios are measured in the same run. Target: ask_many
/ raw <= 1.15.

Two models: the bundled one (small: overheads weigh most) and the 7B preset's layout scaled down (one
EVA-g block at 448 px, one LLaMA-7B layer), in float32, which this kind of CPU computes fastest.

    python bench/ask_many_overhead.py [--questions 64] [--rounds 3] [--scaled-questions 16] [--scaled-rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scaled_7b import best, build, interleaved, machine, scaled_config
from skyeye.images import load_image
from skyeye.model.inputs import collate, encode
from skyeye.model.loading import default_source, load_model
from skyeye.prompts import Conversation

BATCH = 16
QUESTION = "Briefly describe this image."


def write_images(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"{index}.jpg"
        Image.fromarray(rng.integers(0, 255, (600, 600, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def raw_batches(model, paths: list[str]) -> list[dict]:
    """Each batch's pixels and tokens, prepared outside the timed region."""
    batches = []
    for start in range(0, len(paths), BATCH):
        span = paths[start : start + BATCH]
        pixels = model.cfg.vision.to_pixels([load_image(path).image for path in span])
        segments = Conversation().ask(QUESTION, "caption").segments(model.cfg.prompt_style)
        sample = encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image)
        batches.append({"pixels": pixels, **collate([sample] * len(span), model.tokenizer.pad_token_id, "left")})
    return batches


def measure(model, paths: list[str], rounds: int, new_tokens: int, batch_by_batch: bool) -> dict[str, float]:
    generation = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    prepared = raw_batches(model, paths)
    questions, tasks = [QUESTION] * len(paths), ["caption"] * len(paths)

    @torch.inference_mode()
    def raw():
        for batch in prepared:
            embeds = model.embed(batch["input_ids"], batch["image_mask"], batch["pixels"])
            model.llama_model.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], do_sample=False,
                                       eos_token_id=model.tokenizer.eos_token_id,
                                       pad_token_id=model.tokenizer.pad_token_id, **generation)  # fmt: skip

    def ask_many():
        model.ask_many(paths, questions, tasks=tasks, batch_size=BATCH, **generation)

    def one_batch_per_call():
        for start in range(0, len(paths), BATCH):
            span = slice(start, start + BATCH)
            model.ask_many(paths[span], questions[span], tasks=tasks[span], batch_size=BATCH, **generation)

    candidates = {"raw": raw, "ask_many": ask_many}
    if batch_by_batch:
        candidates["batch by batch"] = one_batch_per_call
    return {name: best(times) for name, times in interleaved(candidates, rounds).items()}


def report(title: str, times: dict[str, float]) -> None:
    print(title)
    for name, seconds in times.items():
        print(f"  {name:15} {seconds:7.2f} s   {seconds / times['raw']:.2f}x raw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--scaled-questions", type=int, default=16, help="0 skips the 7B-layout model")
    parser.add_argument("--scaled-rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{machine()}; batch {BATCH}; {args.new_tokens} new tokens; best of interleaved rounds")
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_images(Path(scratch), max(args.questions, args.scaled_questions))
        bundled = load_model(default_source(), merge_lora=True)
        bundled_times = measure(bundled, paths[: args.questions], args.rounds, args.new_tokens, batch_by_batch=True)
        report(f"bundled model, {args.questions} questions, {args.rounds} rounds:", bundled_times)
        if args.scaled_questions:
            scaled = build(scaled_config(1, 1, "float32")).merge_lora()
            times = measure(scaled, paths[: args.scaled_questions], args.scaled_rounds, args.new_tokens,
                            batch_by_batch=False)  # fmt: skip
            report(f"7B layout (1 EVA-g block, 1 LLaMA-7B layer), float32, {args.scaled_questions} questions:", times)


if __name__ == "__main__":
    main()
