"""Tiny-preset speed on this machine: one training step (forward + backward, batch 8) and generation.

Prints absolute figures and ratios measured in the same run: the training step against a forward pass
alone, and batched generation (`ask_many`) against one question at a time.

    python bench/model_speed.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from skyeye.model.inputs import collate, encode
from skyeye.model.loading import load_model
from skyeye.prompts import Conversation


def _batch(model, size: int):
    conv = Conversation().ask("Briefly describe this image.", "caption")
    conv.answer("many buildings and some green trees are around a playground with a red track")
    sample = encode(conv.segments(model.cfg.prompt_style), model.tokenizer, model.cfg.visual_tokens_per_image)
    batch = collate([sample] * size, model.tokenizer.pad_token_id)
    side = model.cfg.vision.image_size
    return {"pixels": torch.randn(size, 3, side, side), **batch}


def _best_of(repeats: int, fn) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--questions", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("tiny").train()
    batch = _batch(model, 8)
    tokens = batch["input_ids"].numel()

    def forward():
        with torch.no_grad():
            model(**batch)

    def step():
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    fwd, fwd_bwd = _best_of(args.repeats, forward), _best_of(args.repeats, step)
    print(f"torch threads: {torch.get_num_threads()}; tiny preset, batch 8 x {batch['input_ids'].shape[1]} tokens")
    print(f"forward           {fwd * 1e3:8.1f} ms")
    print(
        f"forward+backward  {fwd_bwd * 1e3:8.1f} ms  ({tokens / fwd_bwd:,.0f} tokens/s, {fwd_bwd / fwd:.2f}x forward)"
    )

    model.eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(args.questions)]
    questions = ["[caption] Briefly describe this image."] * args.questions
    gen = {"max_new_tokens": 32, "min_new_tokens": 32}
    one = _best_of(3, lambda: [model.ask(i, q, **gen) for i, q in zip(images, questions, strict=True)])
    many = _best_of(3, lambda: model.ask_many(images, questions, batch_size=args.questions, **gen))
    print(f"generation, {args.questions} questions x 32 tokens:")
    print(f"  one at a time   {args.questions / one:8.1f} questions/s")
    print(f"  batched         {args.questions / many:8.1f} questions/s  ({one / many:.2f}x one at a time)")


if __name__ == "__main__":
    main()
