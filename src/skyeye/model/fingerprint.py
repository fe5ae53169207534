"""A model's fingerprint: a short digest that says "these weights", cheap enough to take of a 7B model.

Hashing every byte of 14 GB would take longer than many evaluations, and file paths say nothing about what
a folder holds. The fingerprint hashes instead the architecture (the config, less its labels), the
tokenizer's vocabulary, and for every tensor of the state dict its name, shape, dtype and a few evenly
spaced elements. Training, a LoRA merge, a dtype change or a swapped file change whole tensors and so the
samples; an edit confined to a few elements that no sample reads would go unseen. Values are read exactly
(no rounding) at positions computed in integers, so a model gives the same fingerprint on CPU and GPU.
"""

from __future__ import annotations

import hashlib
import json

import torch

SAMPLES_PER_TENSOR = 64
# Labels and reading options, not properties of the weights: the prompt style is recorded on its own.
UNHASHED_CONFIG_FIELDS = ("name", "tokenizer", "prompt_style")


def model_fingerprint(model, samples_per_tensor: int = SAMPLES_PER_TENSOR) -> str:
    """16 hex digits of SHA-256 over the config, the vocabulary and sampled elements of every tensor."""
    digest = hashlib.sha256()
    config = {k: v for k, v in model.cfg.to_dict().items() if k not in UNHASHED_CONFIG_FIELDS}
    digest.update(json.dumps(config, sort_keys=True).encode())
    if model.tokenizer is not None:
        vocabulary = sorted(model.tokenizer.get_vocab().items())
        specials = [model.tokenizer.bos_token_id, model.tokenizer.eos_token_id, model.tokenizer.pad_token_id]
        digest.update(json.dumps([vocabulary, specials]).encode())
    samples = []
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            samples.append(_evenly_spaced(tensor, samples_per_tensor))
    if samples:
        # One transfer for all tensors; float64 holds every float16/bfloat16/float32 value exactly.
        digest.update(torch.cat([s.to(samples[0].device) for s in samples]).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _evenly_spaced(tensor: torch.Tensor, count: int) -> torch.Tensor:
    flat = tensor.detach().reshape(-1)
    if flat.numel() <= count:
        return flat.to(torch.float64)
    # Integer arithmetic, so that the same positions are read on every device.
    positions = torch.arange(count, dtype=torch.int64) * (flat.numel() - 1) // (count - 1)
    return flat[positions.to(flat.device)].to(torch.float64)
