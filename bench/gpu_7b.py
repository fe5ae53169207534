"""GPU figures for the skyeyegpt-7b preset: vision tower, prefill and decode rates, and the bandwidth bound.

Builds the 7B preset with random weights directly on the GPU in bfloat16 (nothing is downloaded; the small
bundled tokenizer stands in for LLaMA's, its ids lie inside the 32,000-row vocabulary) with SDPA attention,
then prints:
- EVA-g images/s at 448 px;
- prefill tokens/s (one prompt: 256 visual tokens + the question) at batch 1, 8 and 32;
- decode tokens/s at batch 1, 8 and 32, and that rate as a share of the HBM bound: a decode step reads every
  LLM weight once, so at most batch x bandwidth / weight bytes tokens/s (bandwidth measured here by a
  device-to-device copy);
- `ask_many` from PIL images against plain transformers `generate` on the same weights and prompts (the
  ratio of SkyEye's whole answer path to the bare model work);
- with --static-cache, decode at batch 1 with transformers' static KV cache (and the torch.compile that
  transformers applies to it) against the dynamic cache.

Needs a CUDA GPU with about 20 GB free; it stops at once with a clear message otherwise.

    python bench/gpu_7b.py [--new-tokens 64] [--batches 1 8 32] [--static-cache]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image

QUESTION = "[caption] Briefly describe this image."


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if not torch.version.cuda else "torch sees no CUDA device"
        sys.exit(f"bench/gpu_7b.py needs a CUDA GPU: {why} (torch {torch.__version__}). Nothing was measured.")
    return torch.device("cuda")


def timed(fn, repeats: int = 3) -> float:
    """Best of `repeats` after one warm-up call, with the GPU synchronised around each."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def copy_bandwidth(device: torch.device, gib: int = 2) -> float:
    """Bytes/s of a device-to-device copy (each byte read once and written once)."""
    source = torch.empty(gib * 2**30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), repeats=5)
    return 2 * gib * 2**30 / seconds


def build_7b(device: torch.device):
    from skyeye.model.config import load_preset
    from skyeye.model.loading import default_dtype
    from skyeye.model.skyeye import SkyEye
    from skyeye.model.tokenizer import bundled_path, load_tokenizer

    cfg = load_preset("skyeyegpt-7b")
    cfg.dtype = "bfloat16"
    torch.manual_seed(0)
    with torch.device(device), default_dtype(torch.bfloat16):
        model = SkyEye(cfg, load_tokenizer(bundled_path("tokenizer-tiny")))
    model.llama_model.set_attn_implementation("sdpa")
    return model.eval().merge_lora()


def prompt_batch(model, size: int) -> dict[str, torch.Tensor]:
    from skyeye.model.inputs import collate, encode
    from skyeye.prompts import Conversation

    segments = Conversation().ask(QUESTION).segments(model.cfg.prompt_style)
    sample = encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image)
    batch = collate([sample] * size, model.tokenizer.pad_token_id, "left")
    side = model.cfg.vision.image_size
    batch["pixels"] = torch.randn(size, 3, side, side)
    return {k: v.to(model.device) for k, v in batch.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--static-cache", action="store_true")
    args = parser.parse_args()
    device = require_cuda()
    name = torch.cuda.get_device_name(device)
    bandwidth = copy_bandwidth(device)
    started = time.perf_counter()
    model = build_7b(device)
    torch.cuda.synchronize()
    built = time.perf_counter() - started
    llm_bytes = sum(p.nbytes for n, p in model.llama_model.named_parameters() if "embed_tokens" not in n)
    total = sum(p.numel() for p in model.parameters())
    print(f"{name}; torch {torch.__version__}; {total / 1e9:.2f}B parameters built in bfloat16 on the GPU in "
          f"{built:.1f} s; copy bandwidth {bandwidth / 1e9:.0f} GB/s; LLM weights read per decode step "
          f"{llm_bytes / 1e9:.1f} GB")  # fmt: skip
    eos, pad = model.tokenizer.eos_token_id, model.tokenizer.pad_token_id
    fixed = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False,
             "eos_token_id": eos, "pad_token_id": pad}  # fmt: skip

    with torch.inference_mode():
        pixels = prompt_batch(model, 8)["pixels"]
        tower = timed(lambda: model.visual_features(pixels))
        print(f"EVA-g vision tower: {8 / tower:.1f} images/s (batch 8, 448 px)")
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (448, 448, 3), dtype=np.uint8))
        for size in args.batches:
            batch = prompt_batch(model, size)
            embeds = model.embed(batch["input_ids"], batch["image_mask"], batch["pixels"])
            mask = batch["attention_mask"]
            prefill = timed(lambda e=embeds, m=mask: model.llama_model(inputs_embeds=e, attention_mask=m))
            whole = timed(lambda e=embeds, m=mask: model.llama_model.generate(inputs_embeds=e, attention_mask=m,
                                                                               **fixed))  # fmt: skip
            decode_rate = size * (args.new_tokens - 1) / max(whole - prefill, 1e-9)
            bound = size * bandwidth / llm_bytes
            raw = timed(lambda b=batch: model.llama_model.generate(
                inputs_embeds=model.embed(b["input_ids"], b["image_mask"], b["pixels"]),
                attention_mask=b["attention_mask"], **fixed))  # fmt: skip
            ours = timed(lambda s=size: model.ask_many([image] * s, [QUESTION] * s, batch_size=s,
                                                       max_new_tokens=args.new_tokens,
                                                       min_new_tokens=args.new_tokens))  # fmt: skip
            print(f"batch {size:3}: prefill {size * mask.shape[1] / prefill:9,.0f} tokens/s; decode "
                  f"{decode_rate:8,.0f} tokens/s = {decode_rate / bound:4.0%} of the bandwidth bound "
                  f"({bound:,.0f}); ask_many / plain generate {ours / raw:.2f}")  # fmt: skip
        if args.static_cache:
            batch = prompt_batch(model, 1)
            embeds = model.embed(batch["input_ids"], batch["image_mask"], batch["pixels"])
            rates = {}
            for cache in ("dynamic", "static"):
                extra = {"cache_implementation": "static"} if cache == "static" else {}
                seconds = timed(lambda c=extra: model.llama_model.generate(
                    inputs_embeds=embeds, attention_mask=batch["attention_mask"], **fixed, **c))  # fmt: skip
                rates[cache] = args.new_tokens / seconds
            gain = rates["static"] / rates["dynamic"]
            print(f"batch 1, whole generate: dynamic cache {rates['dynamic']:.0f} tokens/s, static cache "
                  f"(+ compile) {rates['static']:.0f} tokens/s ({gain:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
