"""Weight-only int8 (and int4) against bfloat16: memory, decode speed and answer agreement, on CPU.

A model of the 7B preset's layout scaled down (about 1B parameters by default) is saved as a float16
checkpoint folder (the 7B preset's dtype, which a CPU runs as bfloat16) and loaded with `load_model(...,
quantize=None | "int8" | "int4")`, as `skyeye ask --quantize` does. Prints, as ratios to bfloat16 measured
in the same run:
- memory of a fresh process loading the folder: the weights' bytes, RSS after the load, peak RSS of the load;
- the vision tower (EVA-g blocks at 448 px, 1,025 tokens; int8 with either kind, but only on a CPU without
  bfloat16 instructions, see `tower_takes_int8`): seconds per image, best of interleaved rounds, and the
  relative error of its features against bfloat16's;
- decode tokens/s at batch 1: (time to generate 1 + N tokens - time to generate 1) / N from a short text
  prompt (the vision tower and a 256-token image prefill would cost the same in every form), best of
  interleaved rounds;
- agreement with bfloat16: greedy continuations identical, and next-token top-1 agreement along
  bfloat16's own continuations (teacher-forced). The scaled model's weights are random and its top tokens
  near ties, so the same is measured on the bundled trained model answering questions about rendered scenes
  (in its float32 against the quantized forms, whose products run with bfloat16 activations);
- the weight bytes of the real skyeyegpt-7b preset in each form (counted on the meta device).
Linux only (/proc/self/status).

    python bench/int8.py [--threads 2] [--rounds 5] [--new-tokens 16] [--vision-blocks 2] [--llm-layers 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scaled_7b import best, build, interleaved, machine, parameters, scaled_config
from skyeye.data.synth import render_scene
from skyeye.model.loading import default_source, load_model

KINDS = (None, "int8", "int4")
PROMPTS = [
    "A satellite image of a harbour shows",
    "Question: how many planes are parked near the terminal? Answer:",
    "The river crosses the farmland from",
    "List the objects in this scene:",
]
QUESTIONS = [
    ("Briefly describe this image.", "caption"),
    ("How many planes are there?", "vqa"),
    ("Is there a road?", "vqa"),
    ("the storage tank", "grounding"),
]
PROBE = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from scaled_7b import rss_status
from skyeye.model.loading import load_model
torch.set_num_threads(int(sys.argv[4]))
load_model("tiny")  # imports and first-use allocations: not what is measured
before = rss_status()
model = load_model(sys.argv[2], quantize=None if sys.argv[3] == "-" else sys.argv[3], merge_lora=True)
weights = sum(t.nbytes for t in model.state_dict().values())
print(weights, rss_status() - before, rss_status("VmHWM:") - before)
"""


def label(kind: str | None) -> str:
    return kind or "bfloat16"


def memory(folder: Path, kind: str | None, threads: int) -> tuple[int, int, int]:
    """(weight bytes, RSS after the load, peak RSS) of a fresh process, above its RSS before loading."""
    command = [sys.executable, "-c", PROBE, str(Path(__file__).parent), str(folder), kind or "-", str(threads)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    weights, after, peak = run.stdout.split()[-3:]
    return int(weights), int(after), int(peak)


def prompt_ids(model, text: str) -> torch.Tensor:
    return torch.tensor([model.tokenizer(text)["input_ids"]])


def continuation(model, ids: torch.Tensor, tokens: int, exactly: bool = False) -> torch.Tensor:
    """Greedy tokens after `ids` from the LLM alone (`exactly`: no stopping at the end-of-sequence token)."""
    lengths = {"max_new_tokens": tokens, "min_new_tokens": tokens if exactly else 0}
    out = model.llama_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **lengths)
    return out[:, ids.shape[1] :]


def decode_rates(models: dict, rounds: int, tokens: int) -> dict[str, float]:
    candidates = {}
    for name, model in models.items():
        ids = prompt_ids(model, PROMPTS[0])
        candidates[f"{name} 1"] = lambda model=model, ids=ids: continuation(model, ids, 1, exactly=True)
        candidates[f"{name} N"] = lambda model=model, ids=ids: continuation(model, ids, 1 + tokens, exactly=True)
    for run in candidates.values():  # first calls pay one-off costs (kernel selection, allocations)
        run()
    times = interleaved(candidates, rounds)
    return {name: tokens / (best(times[f"{name} N"]) - best(times[f"{name} 1"])) for name in models}


def tower_figures(models: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (seconds per image through the vision tower, relative error of its features against the first
    model's)."""
    reference, *_ = models.values()
    size = reference.cfg.vision.image_size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    pixels = reference.cfg.vision.to_pixels([image]).to(reference.dtype)
    features = {name: model.visual_features(pixels).float() for name, model in models.items()}  # also a warm-up
    times = interleaved({name: lambda m=model: m.visual_features(pixels) for name, model in models.items()}, rounds)
    expected = features[next(iter(models))]
    return {
        name: (best(times[name]), float((got - expected).norm() / expected.norm())) for name, got in features.items()
    }


def same_top1(model, reference, forward) -> torch.Tensor:
    """Where `model` and `reference` predict the same next token; `forward(m)` gives a model's logits."""
    return forward(model).argmax(-1) == forward(reference).argmax(-1)


def text_agreement(models: dict, tokens: int) -> dict[str, tuple[float, float]]:
    """name -> (share of greedy continuations identical to those of the first model, the reference, and next-token
    top-1 agreement along them), for the other models."""
    reference, *others = models.values()
    prompts = [prompt_ids(reference, text) for text in PROMPTS]
    expected = [continuation(reference, ids, tokens) for ids in prompts]
    result = {}
    for name, model in zip(list(models)[1:], others, strict=True):
        identical = sum(
            torch.equal(continuation(model, ids, tokens), want) for ids, want in zip(prompts, expected, strict=True)
        )
        agree = total = 0
        for ids, want in zip(prompts, expected, strict=True):
            whole = torch.cat([ids, want], dim=1)
            same = same_top1(model, reference, lambda m, whole=whole: m.llama_model(whole).logits)
            along = same[:, ids.shape[1] - 1 : -1]  # the predictions of the continuation's tokens
            agree, total = agree + int(along.sum()), total + along.numel()
        result[name] = (identical / len(prompts), agree / max(1, total))
    return result


def answer_agreement(models: dict, images: list, tokens: int) -> dict[str, tuple[float, float]]:
    """As text_agreement, for `ask` answers to QUESTIONS about each image."""
    from skyeye.model.inputs import IGNORE_INDEX, collate, encode
    from skyeye.prompts import Conversation

    asked = [(image, text, task) for text, task in QUESTIONS for image in images]
    reference, *others = models.values()

    def answers(model) -> list[str]:
        columns = list(zip(*asked, strict=True))
        return [a.text for a in model.ask_many(*columns, max_new_tokens=tokens)]

    expected = answers(reference)
    result = {}
    for name, model in zip(list(models)[1:], others, strict=True):
        identical = sum(a == b for a, b in zip(answers(model), expected, strict=True))
        agree = total = 0
        for (image, text, task), answer in zip(asked, expected, strict=True):
            segments = Conversation().ask(text, task).answer(answer).segments(model.cfg.prompt_style)
            batch = collate([encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image)], 0)
            pixels = model.cfg.vision.to_pixels([image])
            inputs = (batch["input_ids"], batch["image_mask"], batch["attention_mask"])
            same = same_top1(model, reference, lambda m, inputs=inputs, pixels=pixels: m(*inputs, pixels=pixels).logits)
            answered = batch["labels"][:, 1:] != IGNORE_INDEX  # the logits at t predict the token at t + 1
            agree, total = agree + int((same[:, :-1] & answered).sum()), total + int(answered.sum())
        result[name] = (identical / len(asked), agree / max(1, total))
    return result


def preset_7b_bytes() -> dict[str, tuple[int, int]]:
    """name -> (all weight bytes, LLM weight bytes) of skyeyegpt-7b in bfloat16 and quantized (meta device)."""
    from skyeye.model.config import load_preset
    from skyeye.model.quantize import quantize_model, quantize_tower
    from skyeye.model.skyeye import SkyEye

    sizes = {}
    for kind, tower in [(None, False)] + [(kind, tower) for kind in KINDS[1:] for tower in (False, True)]:
        with torch.device("meta"):
            model = SkyEye(load_preset("skyeyegpt-7b")).to_dtype(torch.bfloat16).eval()
            model = quantize_model(model, kind) if kind is not None else model.merge_lora()  # the meta tower stays
            if tower:
                quantize_tower(model)  # as on a CPU without bfloat16 instructions
        state = model.state_dict()
        llm = sum(t.nbytes for name, t in state.items() if name.startswith("llama_model."))
        sizes[label(kind) + (" + int8 tower" if tower else "")] = (sum(t.nbytes for t in state.values()), llm)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--vision-blocks", type=int, default=2)
    parser.add_argument("--llm-layers", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=4, help="rendered scenes the bundled model is asked about")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "checkpoint"
        model = build(scaled_config(args.vision_blocks, args.llm_layers, "float16"))
        size = parameters(model)
        model.save_pretrained(folder)
        del model
        memories = {label(kind): memory(folder, kind, args.threads) for kind in KINDS}
        models = {label(kind): load_model(folder, quantize=kind, merge_lora=True) for kind in KINDS}
    rates = decode_rates(models, args.rounds, args.new_tokens)
    towers = tower_figures(models, args.rounds)
    scaled_agreement = text_agreement(models, args.new_tokens)
    del models
    images = [render_scene(seed, 256)[0] for seed in range(args.scenes)]
    # The bundled model in its own float32: in bfloat16 its convolutional tower fails (batch norm in float32).
    bundled = {kind or "float32": load_model(default_source(), quantize=kind, merge_lora=True) for kind in KINDS}
    bundled_agreement = answer_agreement(bundled, images, args.new_tokens)

    print(
        f"{machine()}; {size / 1e9:.2f}B parameters (EVA-g {args.vision_blocks} blocks, LLaMA-7B "
        f"{args.llm_layers} layers), a float16 checkpoint run as bfloat16; ratios to bfloat16 of the same run"
    )
    gib = 2**30
    weights0, after0, peak0 = memories["bfloat16"]
    print("memory of a fresh process loading it   weights             RSS after the load    peak RSS")
    for name, (weights, after, peak) in memories.items():
        print(f"  {name:8} {weights / gib:6.2f} GiB ({weights / weights0:.2f}x)   {after / gib:6.2f} GiB "
              f"({after / after0:.2f}x)   {peak / gib:6.2f} GiB ({peak / peak0:.2f}x)")  # fmt: skip
    print(
        f"decode at batch 1 ({args.new_tokens} tokens after a short prompt), best of {args.rounds} interleaved rounds"
    )
    for name, rate in rates.items():
        print(f"  {name:8} {rate:6.2f} tokens/s ({rate / rates['bfloat16']:.2f}x)")
    print(f"vision tower ({args.vision_blocks} EVA-g blocks, one image), best of {args.rounds} interleaved rounds")
    for name, (seconds, error) in towers.items():
        print(f"  {name:8} {seconds:6.3f} s ({seconds / towers['bfloat16'][0]:.2f}x)   feature error {error:.2%}")
    for reference, title, table, count in (
        ("bfloat16", "greedy text continuations of the scaled model (random weights)", scaled_agreement,
         len(PROMPTS)),
        ("float32", f"answers of the bundled trained model ({Path(default_source()).name})", bundled_agreement,
         len(QUESTIONS) * args.scenes),
    ):  # fmt: skip
        print(f"agreement with {reference} over {count} {title}")
        for name, (identical, top1) in table.items():
            print(f"  {name:8} identical {identical:6.1%} ({round(identical * count)}/{count})   "
                  f"next-token top-1 along {reference}'s tokens {top1:6.1%}")  # fmt: skip
    print(
        "skyeyegpt-7b weights (meta device; the LLM's Linear layers but lm_head quantized, the tower's to int8 "
        "only on a CPU without bfloat16 instructions, the rest in bfloat16)"
    )
    full = preset_7b_bytes()
    for name, (total, llm) in full.items():
        ratio = total / full["bfloat16"][0]
        print(f"  {name:21} {total / gib:6.2f} GiB in all ({ratio:.2f}x), LLM {llm / gib:5.2f} GiB")


if __name__ == "__main__":
    main()
