"""One training step (forward + backward) of the bundled model on a batch of grounding-length records, three ways:
no box attention (sdpa everywhere, the baseline), box attention with eager attention in every layer, and box
attention with eager attention only in the layers its loss reads (train/box_attention.return_weights_in, what
`skyeye train` does). Interleaved rounds on this machine's CPU cores; the best round counts, ratios against the
baseline measured in the same run.

    python bench/box_attention_step.py --rounds 5 --boxes 30
"""

from __future__ import annotations

import argparse

import torch

from scaled_7b import best, interleaved, machine
from skyeye.model.loading import load_model
from skyeye.train.box_attention import BoxAttentionTargets, box_attention_loss, return_weights_in

LAYERS, HEADS = [1, 2], [0, 1]  # configs/train/bundled-grounding.yaml


def batch(model, size: int, boxes: int):
    """`size` rows: the image's visual tokens, a short grounding question, and an answer of `boxes` boxes."""
    tokenizer = model.tokenizer
    visual = model.cfg.visual_tokens_per_image
    asked = tokenizer("[refer] give me the location of the ground track field", add_special_tokens=False)["input_ids"]
    text = "<delim>".join(f"{{<{k}><{k + 5}><{k + 20}><{k + 30}>}}" for k in range(0, 70, 70 // boxes or 1)[:boxes])
    answer = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id] + [tokenizer.pad_token_id] * visual + asked + answer
    labels = [-100] * (1 + visual + len(asked)) + answer
    image_mask = [False] + [True] * visual + [False] * (len(asked) + len(answer))
    rows = torch.tensor([ids] * size)
    side = model.cfg.vision.image_size
    return rows, torch.tensor([labels] * size), torch.tensor([image_mask] * size), torch.randn(size, 3, side, side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="src/skyeye/assets/model-tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--boxes", type=int, default=2, help="boxes per answer (a detection answer: 10-30)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    model.train()
    ids, labels, image_mask, pixels = batch(model, args.batch_size, args.boxes)
    queries, keys = BoxAttentionTargets(model.cfg, model.tokenizer)(labels, image_mask)
    llm = model.llama_model

    def step(implementation, weights: bool):
        def run():
            implementation()
            output = model(ids, image_mask, torch.ones_like(ids), pixels=pixels, labels=labels,
                           output_attentions=weights)  # fmt: skip
            loss = output.loss
            if weights:
                every = len(output.attentions) > len(LAYERS)  # eager everywhere returns every layer's weights
                chosen = [output.attentions[layer] for layer in LAYERS] if every else output.attentions
                loss = loss + box_attention_loss(chosen, queries, keys, HEADS)
            loss.backward()
            model.zero_grad(set_to_none=True)

        return run

    candidates = {
        "no box attention (sdpa)": step(lambda: llm.set_attn_implementation("sdpa"), weights=False),
        "box attention, eager in every layer": step(lambda: llm.set_attn_implementation("eager"), weights=True),
        "box attention, eager in its layers": step(lambda: return_weights_in(llm, LAYERS), weights=True),
    }
    for run in candidates.values():  # warm-up
        run()
    times = interleaved(candidates, args.rounds)
    baseline = best(next(iter(times.values())))
    print(f"{machine()}; {args.model}, batch {args.batch_size} x {ids.shape[1]} tokens, best of {args.rounds}")
    for name, values in times.items():
        print(f"{name:40s} {best(values) * 1000:8.0f} ms/step  {best(values) / baseline:5.2f}x")


if __name__ == "__main__":
    main()
