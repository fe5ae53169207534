"""The project's own checkpoint folder: `skyeye.yaml` + `model.safetensors` + `tokenizer/`.

`model.safetensors` holds every tensor of the model in the config's dtype. LoRA is kept separate
(unmerged): the base weights and the `lora_A` / `lora_B` tensors are stored side by side under peft's
names, so the adapters can still be trained further or merged later.

Loading builds the model on the meta device and assigns the tensors into it. Tensors already in the
dtype the model wants stay memory-mapped (no copy); the others are converted one by one, read through
mappings that are closed as they go (see `read_weights`), so peak memory stays close to the size of the
weights in the target dtype whatever dtype the file holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from skyeye import atomic
from skyeye.model.config import TRAINABLE_PARTS, SkyEyeConfig
from skyeye.model.quantize import quantization_of
from skyeye.model.tokenizer import load_tokenizer, resolve_tokenizer_path

CONFIG_FILE = "skyeye.yaml"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_ENTRIES = {CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR}


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not match the model; the message names the file and the keys."""


def is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def save_checkpoint(model, folder: str | Path, state: dict | None = None) -> Path:
    """Writes the folder whole or not at all (see skyeye.atomic), replacing a checkpoint already there;
    `state` replaces model.state_dict() (e.g. weights gathered from sharded processes)."""
    from safetensors.torch import save_file

    if state is None and getattr(model, "lora_merged", False):
        raise CheckpointError(
            f"model {model.cfg.name}: its LoRA is merged for inference; save the model loaded without merge_lora, "
            "so that the checkpoint keeps the base weights and LoRA apart"
        )
    if state is None and (kind := quantization_of(model)):
        raise CheckpointError(f"model {model.cfg.name}: its LLM is quantized to {kind} for inference; save the "
                              "model loaded without quantize")  # fmt: skip
    folder = Path(folder).absolute()
    foreign = sorted(set(os.listdir(folder)) - CHECKPOINT_ENTRIES) if folder.is_dir() else []
    if folder.is_file() or foreign:
        what = "is a file" if folder.is_file() else f"holds {', '.join(foreign[:5])}"
        raise CheckpointError(f"{folder}: {what}, not a checkpoint to replace; save into a new or empty folder")
    partial = atomic.begin_folder(folder)
    cfg = SkyEyeConfig.from_dict(model.cfg.to_dict())
    cfg.tokenizer = TOKENIZER_DIR
    cfg.to_yaml(partial / CONFIG_FILE)
    model.tokenizer.save_pretrained(str(partial / TOKENIZER_DIR))
    state = {k: v.detach().contiguous().cpu() for k, v in (state or model.state_dict()).items()}
    save_file(state, str(partial / WEIGHTS_FILE), metadata={"format": "skyeye", "lora": "separate"})
    return atomic.publish_folder(partial)


def read_config(folder: Path) -> SkyEyeConfig:
    return SkyEyeConfig.from_yaml(Path(folder) / CONFIG_FILE)


def load_checkpoint(folder: str | Path, dtype: str | None = None, image_size: int | None = None):
    """The model of a checkpoint folder; frozen parts in the config's dtype (or `dtype`), learning parts float32;
    a conv tower fed images of side `image_size` when given (SkyEyeConfig.resize_input).

    Values are not scanned for NaN or infinity here (that would read every byte of a memory-mapped 14 GB
    file at load): the model checks its first output instead and then names the tensor (SkyEye.weight_files).
    """
    from safetensors import SafetensorError

    from skyeye.model.skyeye import SkyEye

    folder = Path(folder)
    cfg = read_config(folder)
    if dtype is not None:
        cfg.dtype = dtype
    if image_size is not None:
        cfg.resize_input(image_size, str(folder))
    tokenizer = load_tokenizer(resolve_tokenizer_path(cfg.tokenizer or TOKENIZER_DIR, base=folder))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder}: no {WEIGHTS_FILE} beside {CONFIG_FILE}")
    with torch.device("meta"):
        model = SkyEye(cfg, tokenizer).to_dtype(getattr(torch, cfg.dtype))
    try:
        state = read_weights(weights, model.state_dict())
    except SafetensorError as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file, truncated or damaged? ({err})") from err
    assign_state(model, state, str(weights))
    rebuild_computed_buffers(model)
    model.weight_files = dict.fromkeys(TRAINABLE_PARTS, str(weights))
    return model


def read_weights(path: Path, expected: dict[str, torch.Tensor], ignore: Callable[[str], bool] = lambda name: False
                 ) -> dict[str, torch.Tensor]:  # fmt: skip
    """The tensors of a safetensors file, each in the dtype of the `expected` tensor of its name; the file
    must hold exactly the `expected` names, besides those `ignore` accepts (which are not read).

    A tensor already in that dtype stays memory-mapped: its pages are read when used and are the weights
    themselves. A tensor in another dtype is converted, and the file pages read for it stay resident as
    long as their mapping lives (a float32 file loaded as bfloat16 would peak at three times the weights).
    So conversions read through mappings of their own, each closed after READ_BUDGET_FRACTION of the file:
    peak memory is the weights in the target dtype plus that fraction.
    """
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    chunks: list[list[str]] = [[]]  # the tensors to convert, grouped by the mapping that reads them
    budget, chunk_bytes = path.stat().st_size * READ_BUDGET_FRACTION, 0
    with safe_open(str(path), framework="pt") as handle:
        stored = handle.keys()
        names = [name for name in stored if not ignore(name)]
        require_same_names(str(path), expected, names)
        for name in names:
            tensor = handle.get_tensor(name)  # mapped, not yet read
            if tensor.dtype == expected[name].dtype:
                state[name] = fitted(str(path), name, tensor, expected[name])
                continue
            if chunk_bytes >= budget:
                chunks.append([])
                chunk_bytes = 0
            chunks[-1].append(name)
            chunk_bytes += tensor.nbytes
    for chunk in chunks:
        with safe_open(str(path), framework="pt") as handle:
            for name in chunk:
                state[name] = fitted(str(path), name, handle.get_tensor(name), expected[name])
    return state


READ_BUDGET_FRACTION = 1 / 16


def require_same_names(origin: str, expected, found) -> None:
    """Every model tensor must come from the file and every tensor of the file must belong to the model."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(describe_mismatch(origin, missing, unexpected))


def assign_state(module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Assigns `state` into a meta-built module, each tensor in the dtype the module gives it (see
    SkyEye.to_dtype); every module tensor must come from `state` and vice versa."""
    expected = module.state_dict()
    require_same_names(origin, expected, state)
    module.load_state_dict({k: fitted(origin, k, v, expected[k]) for k, v in state.items()}, assign=True)


def fitted(origin: str, name: str, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` in the dtype of the model's tensor `like`; another shape, or integers where the model holds
    floating-point values, is an error naming the file and the tensor."""
    if tensor.shape != like.shape:
        raise CheckpointError(
            f"{origin}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(like.shape)}"
        )
    if like.is_floating_point() and not tensor.is_floating_point():
        raise CheckpointError(
            f"{origin}: {name} holds {str(tensor.dtype).removeprefix('torch.')} values, the model expects "
            f"floating point ({str(like.dtype).removeprefix('torch.')})"
        )
    return tensor.to(like.dtype)


def rebuild_computed_buffers(model) -> None:
    """Recomputes buffers that are derived from the config rather than stored (LLaMA's rotary frequencies)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llm = model.llama_model
    if any(b.is_meta for b in llm.model.rotary_emb.buffers()):
        llm.model.rotary_emb = LlamaRotaryEmbedding(llm.config)
    leftover = [name for name, b in model.named_buffers() if b.is_meta]
    leftover += [name for name, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise CheckpointError(f"tensors left without values after loading: {', '.join(leftover[:10])}")


def describe_mismatch(origin: str, missing: list[str], unexpected: list[str], limit: int = 12) -> str:
    lines = [f"{origin}: the tensors do not match the model"]
    for title, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(sorted(keys)[:limit]) + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")
            lines.append(f"  {len(keys)} {title}: {shown}")
    return "\n".join(lines)
