"""One `skyeye ask` answer's model time for two model folders (e.g. the bundled model before and after a
retraining), interleaved on the same images and questions, on this machine's CPU cores.

Each round asks every question once per model (greedy, the model's own stopping), so a model that answers
in fewer tokens is faster for it; the generated token counts are printed beside the times. The image is
decoded and resized inside the timed call, as `skyeye ask` does. The best round counts (the least disturbed
on a shared machine); the ratio new ÷ old is measured in the same run.

    git worktree add /tmp/before HEAD~1   # e.g. the bundled model before a retraining
    python bench/bundled_latency.py /tmp/before/src/skyeye/assets/model-tiny src/skyeye/assets/model-tiny
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scaled_7b import best, interleaved, machine
from skyeye.model.loading import load_model

QUESTIONS = [
    ("Briefly describe this image.", "caption"),
    ("What can you tell me about this image?", None),
    (
        "Classify the image within one of the given classes: airport, bare land, beach, bridge, dense residential, "
        "farmland, forest, harbor, parking, river. Answer it using the above category word or phrase.",
        "vqa",
    ),
    ("the bridge", "grounding"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {"old": load_model(str(args.old)).eval(), "new": load_model(str(args.new)).eval()}
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "scene.jpg"
        pixels = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image, quality=90)
        tokens = {name: [] for name in models}

        def asker(name):
            def run():
                for text, task in QUESTIONS:
                    answer = models[name].ask(str(image), text, task=task, max_new_tokens=64)
                    tokens[name].append(len(models[name].tokenizer(answer.text, add_special_tokens=False)["input_ids"]))

            return run

        with torch.inference_mode():
            times = interleaved({name: asker(name) for name in models}, args.rounds)
    print(machine())
    for name, folder in (("old", args.old), ("new", args.new)):
        per_answer = best(times[name]) / len(QUESTIONS)
        mean_tokens = sum(tokens[name]) / len(tokens[name])
        print(
            f"{name}: {folder}: {per_answer * 1000:.0f} ms per answer (best of {args.rounds} rounds), "
            f"{mean_tokens:.1f} tokens per answer"
        )
    print(f"new / old answer time: {best(times['new']) / best(times['old']):.2f}")


if __name__ == "__main__":
    main()
