"""Loading the released SkyEyeGPT / MiniGPT-v2 weights, offline and without MiniGPT-4's code.

A released model is three files:
- the EVA-CLIP-g tower `eva_vit_g.pth` (LAVIS / BLIP-2 release; a bare state dict, or one under
  `model` / `state_dict`, keys optionally prefixed `visual_encoder.`);
- a Hugging Face LLaMA-2-chat folder (config, tokenizer, safetensors or bin shards), loaded by
  transformers, which itself skips the stale `rotary_emb.inv_freq` buffers of old LLaMA files;
- the SkyEyeGPT / MiniGPT-v2 checkpoint `.pth`, whose `["model"]` holds only what was trained:
  `llama_proj.*`, the LLaMA LoRA tensors and possibly LoRA on `llama_proj`.

Every tensor of every file is mapped onto the model or reported. Documented tensors that are dropped:
- EVA blocks at index >= the configured depth (EVA-CLIP-g has 40 blocks, MiniGPT-v2 uses 39) and the
  EVA classifier parts `norm.*`, `fc_norm.*`, `head.*` (unused by MiniGPT-v2, which has no final norm).
Everything else that does not map is an error naming the keys. LoRA keys are accepted in both peft
spellings: peft 0.2 (`...q_proj.lora_A.weight`, what MiniGPT-4's environment pins) and newer peft
(`...q_proj.lora_A.default.weight`, base weight `...q_proj.base_layer.weight`). MiniGPT-v2 itself loads
with `strict=False`, so with a mismatched peft it silently drops the LoRA weights; here a LoRA tensor the
model expects but the checkpoint lacks is an error too.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import replace
from pathlib import Path

import torch

from skyeye.model.checkpoint import (
    CheckpointError,
    assign_state,
    describe_mismatch,
    fitted,
    read_weights,
    rebuild_computed_buffers,
    require_same_names,
)
from skyeye.model.config import LLMConfig, SkyEyeConfig, load_preset
from skyeye.model.tokenizer import load_tokenizer

IGNORED_EVA_PATTERNS = (r"(norm|fc_norm|head)\..*",)
# Rotary frequencies that old LLaMA conversions saved; they are computed from the config (as transformers does).
STALE_LLAMA_KEY = re.compile(r"rotary_emb\.inv_freq$")
LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<which>lora_[AB])(\.default)?\.weight$")
PEFT_WRAPPER = "llama_model.base_model.model."
log = logging.getLogger(__name__)


def torch_load(path: str | Path, allow_pickle: bool = False) -> dict:
    """Loads a `.pth` memory-mapped; objects beyond tensors need `allow_pickle` (runs the file's code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=not allow_pickle)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or damaged?") from err
        raise CheckpointError(
            f"{path}: holds Python objects beyond tensors ({refused[1]}) and was refused. If you trust the file, "
            "load it with allow_pickle=True (CLI: --trust-pickle)."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "it ends early"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or damaged? ({reason})") from err


def _unwrap(state, path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a dict of tensors")
    for key in keys:
        if key in state and isinstance(state[key], dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found (top-level keys: {sorted(state)[:10]})")
    return tensors


def load_eva_tower(path: str | Path, cfg: SkyEyeConfig, dtype: torch.dtype, allow_pickle: bool = False):
    """The vision tower with `eva_vit_g.pth` assigned into it (built on meta: no second copy in memory)."""
    from skyeye.model.vision import build_vision_tower

    path = Path(path)
    state = _unwrap(torch_load(path, allow_pickle), path, ("model", "state_dict", "module"))
    state = {k.removeprefix("visual_encoder."): v for k, v in state.items()}
    with torch.device("meta"):
        tower = build_vision_tower(cfg.vision).to(dtype)
    kept = tower.adapt_state_dict(state)
    ignored = sorted(set(state) - set(kept))
    ignored += [k for k in kept if any(re.fullmatch(p, k) for p in IGNORED_EVA_PATTERNS)]
    assign_state(tower, {k: v for k, v in kept.items() if k not in ignored}, str(path))
    return tower, ignored


def load_llama(folder: str | Path, dtype: torch.dtype):
    """LLaMA and its tokenizer from a Hugging Face folder, and the LLM config read from it."""
    from safetensors import SafetensorError
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a Hugging Face LLaMA folder (no config.json)")
    try:
        files = _safetensors_files(folder)
        if files:
            llm = _read_llama(folder, files, dtype)
        else:  # .bin shards only: pickles, read by transformers
            llm, report = LlamaForCausalLM.from_pretrained(str(folder), dtype=dtype, output_loading_info=True)
            missing, unexpected = sorted(report["missing_keys"]), sorted(report["unexpected_keys"])
            mismatched = sorted(str(k) for k in report["mismatched_keys"])
            if missing or unexpected or mismatched:
                raise CheckpointError(describe_mismatch(str(folder), missing + mismatched, unexpected))
    except SafetensorError as err:
        raise CheckpointError(f"{folder}: a .safetensors file is not readable, truncated or damaged? ({err})") from err
    c = llm.config
    llm_cfg = LLMConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        rope_theta=float((c.rope_parameters or {}).get("rope_theta", 10000.0)),
    )
    return llm, load_tokenizer(folder), llm_cfg


def _safetensors_files(folder: Path) -> list[Path]:
    """The folder's .safetensors weights: the shards its index names, or the single model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            return sorted({folder / Path(name).name for name in weight_map.values()})
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index}: not a safetensors index (a JSON object with a weight_map)") from err
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def _read_llama(folder: Path, files: list[Path], dtype: torch.dtype):
    """LLaMA built on the meta device and its tensors assigned from the shards, converted one by one
    (`read_weights`): transformers' own loading holds the whole file mapped while it converts, which peaks
    at the weights plus the file (3x the weights for a float32 folder loaded as bfloat16)."""
    from safetensors import safe_open
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        llm = LlamaForCausalLM(config).to(dtype)
    expected = llm.state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight")
    names: dict[Path, list[str]] = {}
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"{folder}: the safetensors index names {file.name}, which is not there")
        with safe_open(str(file), framework="pt") as handle:
            stored = handle.keys()
        names[file] = [name for name in stored if not STALE_LLAMA_KEY.search(name)]
    require_same_names(str(folder), expected, [name for file_names in names.values() for name in file_names])
    state: dict[str, torch.Tensor] = {}
    for file, file_names in names.items():
        state.update(read_weights(file, {n: expected[n] for n in file_names}, ignore=STALE_LLAMA_KEY.search))
    llm.load_state_dict(state, assign=True, strict=not config.tie_word_embeddings)
    if config.tie_word_embeddings:
        llm.tie_weights()
    if (folder / "generation_config.json").is_file():
        llm.generation_config = GenerationConfig.from_pretrained(str(folder))
    return llm


def map_release_key(key: str) -> str:
    """MiniGPT-v2 / SkyEyeGPT checkpoint name → SkyEye name (peft 0.2 or newer spellings)."""
    lora = LORA_KEY.match(key)
    if lora:
        module = lora["module"].replace(PEFT_WRAPPER, "llama_model.", 1)
        return f"{module}.{lora['which']}.default.weight"
    if key.startswith(PEFT_WRAPPER):
        return key.replace(PEFT_WRAPPER, "llama_model.", 1)
    return key


def _with_lora_base(name: str, model_keys: set[str]) -> str:
    """`q_proj.weight` of a LoRA-wrapped layer lives at `q_proj.base_layer.weight`."""
    if name in model_keys:
        return name
    head, _, leaf = name.rpartition(".")
    wrapped = f"{head}.base_layer.{leaf}"
    return wrapped if wrapped in model_keys else name


def release_lora_settings(state: dict[str, torch.Tensor], cfg: SkyEyeConfig) -> SkyEyeConfig:
    """Adapts the LoRA settings to what the checkpoint holds (rank, and LoRA on the alignment layer)."""
    ranks = {v.shape[0] for k, v in state.items() if LORA_KEY.match(k) and LORA_KEY.match(k)["which"] == "lora_A"}
    if len(ranks) > 1:
        raise CheckpointError(f"the checkpoint mixes LoRA ranks {sorted(ranks)}")
    lora = cfg.lora
    if ranks:
        lora = replace(lora, r=ranks.pop())
    on_alignment = any(k.startswith("llama_proj.lora_") for k in state)
    return replace(cfg, lora=replace(lora, on_alignment=on_alignment))


def load_release(
    checkpoint: str | Path | None,
    eva: str | Path,
    llama: str | Path,
    cfg: SkyEyeConfig | None = None,
    dtype: str | None = None,
    allow_pickle: bool = False,
):
    """SkyEye with EVA-CLIP-g, LLaMA-2-chat and the released checkpoint (None: base MiniGPT-v2 parts only,
    alignment layer and LoRA freshly initialised, e.g. to start training)."""
    from skyeye.model.skyeye import SkyEye

    cfg = cfg or load_preset("skyeyegpt-7b")
    target = getattr(torch, dtype or cfg.dtype)
    release: dict[str, torch.Tensor] = {}
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        release = _unwrap(torch_load(checkpoint, allow_pickle), checkpoint, ("model",))
        cfg = release_lora_settings(release, cfg)
    tower, ignored = load_eva_tower(eva, cfg, target, allow_pickle)
    llm, tokenizer, llm_cfg = load_llama(llama, target)
    # Released weights are meant to run with MiniGPT-v2's own evaluation prompt (see skyeye.prompts).
    style = "minigptv2" if checkpoint is not None else cfg.prompt_style
    dtype_name = str(target).removeprefix("torch.")
    cfg = replace(cfg, llm=llm_cfg, dtype=dtype_name, tokenizer=None, prompt_style=style).validate(str(llama))
    model = SkyEye(cfg, tokenizer, vision_tower=tower, llm=llm)
    model.ln_vision.to(target)
    model.set_trainable(cfg.trainable)  # the alignment layer and LoRA learn in float32 over the half base
    model.weight_files = {"vision": str(eva), "llm": str(llama)}
    if release:
        _load_trained_part(model, release, checkpoint)
        model.weight_files.update(alignment=str(checkpoint), lora=str(checkpoint))
    rebuild_computed_buffers(model)
    log.info("EVA tower %s: %d documented tensors dropped (%s)", eva, len(ignored), ", ".join(ignored[:6]))
    return model


def _load_trained_part(model, release: dict[str, torch.Tensor], checkpoint: Path) -> None:
    model_state = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in release.items():
        name = _with_lora_base(map_release_key(key), set(model_state))
        if name not in model_state:
            unexpected.append(key)
        elif name in mapped:
            raise CheckpointError(f"{checkpoint}: two tensors map to {name} (both peft spellings present?)")
        else:
            mapped[name] = fitted(str(checkpoint), key, tensor, model_state[name])
    required = {k for k in model_state if ".lora_" in k or k.startswith("llama_proj.")}
    missing = sorted(required - set(mapped))
    if unexpected or missing:
        raise CheckpointError(describe_mismatch(str(checkpoint), missing, unexpected))
    model.load_state_dict(mapped, strict=False)
