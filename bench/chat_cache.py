"""Turn 2 of a chat against turn 1, with the 7B preset's layout scaled down: recomputing the whole conversation
(`model.ask` with the history, as before the conversation cache) and continuing the conversation's cache
(`continue_conversation`, what `skyeye chat` and the web app do).

Each round asks, in this order: turn 1 on a new cache, the short follow-up on that cache, turn 1 with `ask`, and
the follow-up with `ask` and the history. Answers are forced to a fixed length (min = max new tokens) so that
both ways generate the same number of tokens. Prints the best seconds of the interleaved rounds, turn 2 / turn 1
for both ways (the target for a short follow-up: <= 0.3), and whether both ways gave the same tokens.

    python bench/chat_cache.py [--repeats 3] [--vision-blocks 4] [--llm-layers 3] [--answer-tokens 16]
                               [--followup-tokens 4] [--dtype bfloat16]

On a CPU without bfloat16 instructions (AVX2 only) bfloat16 is emulated and slow: `--dtype float32` there.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from scaled_7b import best, build, interleaved, machine, parameters, scaled_config
from skyeye.images import load_image
from skyeye.model.answer import ConversationCache, continue_conversation

FIRST = ("Briefly describe this image.", "caption")
FOLLOW_UP = ("Is there a road?", "vqa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vision-blocks", type=int, default=4)
    parser.add_argument("--llm-layers", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=16, help="tokens of the first answer")
    parser.add_argument("--followup-tokens", type=int, default=4, help="tokens of the follow-up's answer")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    args = parser.parse_args()
    model = build(scaled_config(args.vision_blocks, args.llm_layers, args.dtype)).merge_lora()
    pixels = np.random.default_rng(0).integers(0, 255, (448, 448, 3), dtype=np.uint8)
    image = load_image(Image.fromarray(pixels))
    first = {"max_new_tokens": args.answer_tokens, "min_new_tokens": args.answer_tokens}
    follow_up = {"max_new_tokens": args.followup_tokens, "min_new_tokens": args.followup_tokens}
    answers: dict[str, list[str]] = {"cached": [], "recomputed": []}
    state: dict = {}

    def cached_first():
        state["cache"] = ConversationCache(image)
        state["cached"] = continue_conversation(model, state["cache"], *FIRST, **first)

    def cached_follow_up():
        answer = continue_conversation(model, state["cache"], *FOLLOW_UP, state["cached"].conversation, **follow_up)
        answers["cached"].append(" | ".join(turn.assistant for turn in answer.conversation.turns))

    def recomputed_first():
        state["recomputed"] = model.ask(image, FIRST[0], task=FIRST[1], **first)

    def recomputed_follow_up():
        answer = model.ask(image, FOLLOW_UP[0], task=FOLLOW_UP[1], history=state["recomputed"].conversation,
                           **follow_up)  # fmt: skip
        answers["recomputed"].append(" | ".join(turn.assistant for turn in answer.conversation.turns))

    candidates = {"turn 1, cache": cached_first, "turn 2, cache": cached_follow_up,
                  "turn 1, ask": recomputed_first, "turn 2, ask": recomputed_follow_up}  # fmt: skip
    for run in candidates.values():  # first calls pay one-off costs (kernel selection, allocations)
        run()
    times = {name: best(values) for name, values in interleaved(candidates, args.repeats).items()}
    reused = state["cache"].cached_tokens
    print(f"{machine()}; {parameters(model) / 1e9:.2f}B parameters (EVA-g {args.vision_blocks} blocks at "
          f"{model.cfg.vision.image_size} px, LLaMA-7B {args.llm_layers} layers), {model.dtype}; first answer "
          f"{args.answer_tokens} tokens, follow-up answer {args.followup_tokens}; best of {args.repeats} "
          "interleaved rounds")  # fmt: skip
    for name, seconds in times.items():
        print(f"  {name:14} {seconds:6.2f} s")
    print(f"turn 2 / turn 1, recomputing the conversation: {times['turn 2, ask'] / times['turn 1, ask']:.2f}")
    print(f"turn 2 / turn 1, conversation cache:           {times['turn 2, cache'] / times['turn 1, cache']:.2f} "
          f"(target <= 0.3; the cache ends holding {reused} tokens)")  # fmt: skip
    print(f"same answers both ways: {answers['cached'] == answers['recomputed']}")


if __name__ == "__main__":
    main()
