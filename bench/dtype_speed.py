"""Answer time in bfloat16, float16 and float32 on this machine, with the 7B preset's layout scaled down.

One model per dtype (the same seed, built directly in its dtype), asked the same question about the same
image in interleaved rounds; prints the best seconds per answer and per vision-tower pass, as ratios to
bfloat16 measured in the same run, and the dtype `load_model` picks here for a float16 config.

    python bench/dtype_speed.py [--repeats 3] [--vision-blocks 4] [--llm-layers 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from scaled_7b import best, build, interleaved, machine, parameters, scaled_config
from skyeye.model.loading import compute_dtype

DTYPES = ("bfloat16", "float16", "float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vision-blocks", type=int, default=4)
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    models = {dtype: build(scaled_config(args.vision_blocks, args.llm_layers, dtype)).merge_lora() for dtype in DTYPES}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (448, 448, 3), dtype=np.uint8))
    side = models["bfloat16"].cfg.vision.image_size
    pixels = models["bfloat16"].cfg.vision.to_pixels([image])
    generation = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}

    def answer(model):
        return lambda: model.ask(image, "[caption] Briefly describe this image.", **generation)

    def tower(model):
        return lambda: torch.inference_mode()(model.visual_features)(pixels)

    for model in models.values():  # first calls pay one-off costs (kernel selection, allocations)
        answer(model)()
    answers = interleaved({dtype: answer(model) for dtype, model in models.items()}, args.repeats)
    towers = interleaved({dtype: tower(model) for dtype, model in models.items()}, args.repeats)
    print(f"{machine()}; {parameters(models['float32']) / 1e9:.2f}B parameters "
          f"(EVA-g {args.vision_blocks} blocks at {side} px, LLaMA-7B {args.llm_layers} layers); "
          f"{args.new_tokens} new tokens; best of {args.repeats} interleaved rounds")  # fmt: skip
    for dtype in DTYPES:
        a, t = best(answers[dtype]), best(towers[dtype])
        print(f"  {dtype:9} answer {a:6.2f} s ({a / best(answers['bfloat16']):.2f}x bf16)   "
              f"vision tower {t:6.2f} s ({t / best(towers['bfloat16']):.2f}x bf16)")  # fmt: skip
    print(f"a float16 config loads as {compute_dtype('float16', torch.device('cpu'))} on this CPU (--dtype overrides)")


if __name__ == "__main__":
    main()
