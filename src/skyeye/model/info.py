"""`skyeye info`: a model's architecture and parameter counts, built on the meta device (no weights), and its
model card (skyeye.model.card) where its folder has one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from skyeye.model.card import read_card
from skyeye.model.checkpoint import CONFIG_FILE, is_checkpoint
from skyeye.model.config import NumberLineSettings, SkyEyeConfig, load_preset, preset_dir
from skyeye.model.loading import bundled_model

PART_TITLES = {
    "vision": "vision tower + ln_vision",
    "alignment": "alignment layer (llama_proj)",
    "llm": "LLM (LLaMA)",
    "lora": "LoRA adapters",
    "box_refiner": "box refiner (tower + dense head)",
}


def config_of(source: str | Path) -> SkyEyeConfig:
    path = Path(source)
    if is_checkpoint(path):
        return SkyEyeConfig.from_yaml(path / CONFIG_FILE)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return SkyEyeConfig.from_yaml(path)
    if path.exists():
        raise ValueError(
            f"{path}: `info` reads presets, model config .yaml files and SkyEye checkpoint folders; convert a "
            "released .pth first with `skyeye convert`"
        )
    return load_preset(str(source))


def origin_of(source: str | Path) -> str:
    """Which model `source` is: the bundled one, a preset or a checkpoint folder, named with its path."""
    path = Path(source)
    bundled = bundled_model()
    if bundled is not None and path.exists() and path.resolve() == bundled.resolve():
        return f"the bundled trained model, {bundled} (the default of ask, chat, web and eval)"
    if is_checkpoint(path):
        return f"checkpoint {path}"
    if path.is_file():
        return f"model config {path}"
    return f"preset {source} ({preset_dir() / f'{source}.yaml'})"


def describe(source: str | Path) -> str:
    from skyeye.model.skyeye import SkyEye

    cfg = config_of(source)
    card = read_card(source)
    with torch.device("meta"):  # the number line has no parameters to count and needs the tokenizer: left out
        model = SkyEye(dataclasses.replace(cfg, number_line=NumberLineSettings()))
    v, llm, lora = cfg.vision, cfg.llm, cfg.lora
    side = v.image_size // v.patch_size
    lines = [
        origin_of(source),
        f"model {cfg.name}  (dtype {cfg.dtype}, trainable parts: {', '.join(cfg.trainable)})",
        f"  vision    {v.kind}: {v.image_size}px, patch {v.patch_size} -> {side}x{side}={v.num_patches} patches, "
        + (
            f"{v.width} channels in the last stage, {v.depth} residual blocks per stage"
            if v.kind == "conv"  # heads and mlp_dim mean nothing to a CNN
            else f"width {v.width}, depth {v.depth}, heads {v.heads}, mlp {v.mlp_dim}"
        ),
        f"  merge     {cfg.merge_tokens} neighbouring tokens -> {cfg.visual_tokens_per_image} visual tokens of "
        f"{v.width * cfg.merge_tokens} dims per image",
        f"  alignment Linear({v.width * cfg.merge_tokens}, {llm.hidden_size})"
        + (" + LoRA" if lora.r and lora.on_alignment else "")
        + (
            f" + number line (fixed position code of length {cfg.number_line.visual:g} on visual tokens, "
            f"{cfg.number_line.coordinates:g} on coordinate tokens)"
            if cfg.number_line.active
            else ""
        ),
        f"  llm       LLaMA: vocab {llm.vocab_size}, hidden {llm.hidden_size}, {llm.num_layers} layers, "
        f"{llm.num_heads} heads ({llm.num_kv_heads} kv), mlp {llm.intermediate_size}",
        "  lora      "
        + (
            f"r {lora.r}, alpha {lora.alpha}, dropout {lora.dropout} on {', '.join(lora.target_modules)}"
            if lora.r
            else "none"
        ),
        *(
            [f"  boxes     moved by a box refiner onto the objects it detects ({', '.join(cfg.box_refiner.classes)})"]
            if cfg.box_refiner
            else []
        ),
        "",
        f"  {'part':<32}{'trainable':>16}{'frozen':>16}",
    ]
    totals = {"trainable": 0, "frozen": 0}
    for part, counts in model.parameter_counts().items():
        lines.append(f"  {PART_TITLES[part]:<32}{counts['trainable']:>16,}{counts['frozen']:>16,}")
        for kind in totals:
            totals[kind] += counts[kind]
    lines.append(f"  {'total':<32}{totals['trainable']:>16,}{totals['frozen']:>16,}")
    lines.append(f"  all parameters: {sum(totals.values()):,}")
    if card is not None:  # last, where the eye lands after the command
        lines += ["", *card.text_lines()]
    return "\n".join(lines)
