"""One entry point for every way to get a model: `load_model(source, ...)`.

`source` is one of
- a preset name from `configs/model/` (`tiny`, `skyeyegpt-7b`) or a model config `.yaml`: random weights, seeded;
- the project's own checkpoint folder (`skyeye.yaml` + `model.safetensors` + `tokenizer/`);
- a released SkyEyeGPT / MiniGPT-v2 `.pth`, together with `eva=` (eva_vit_g.pth) and `llama=` (a Hugging
  Face LLaMA-2-chat folder).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from skyeye.model.checkpoint import is_checkpoint, load_checkpoint, read_config
from skyeye.model.config import ConfigError, SkyEyeConfig, load_preset, preset_names
from skyeye.model.tokenizer import bundled_path, load_tokenizer, resolve_tokenizer_path

BUNDLED_MODEL = "model-tiny"
log = logging.getLogger(__name__)


def bundled_model() -> Path | None:
    """The small trained model shipped with the package, if this build carries one."""
    path = bundled_path(BUNDLED_MODEL)
    return path if is_checkpoint(path) else None


def default_source() -> str:
    bundled = bundled_model()
    return str(bundled) if bundled is not None else "tiny"


def is_preset(source: str | Path) -> bool:
    return not Path(source).exists() and str(source) in preset_names()


def check_device(device: str) -> torch.device:
    """The torch device `device` names, if this machine has it; otherwise a ValueError saying what is there."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device}: not a torch device (e.g. cpu, cuda, cuda:1, mps)") from err
    if parsed.type == "cpu":
        return parsed
    backend = getattr(torch, parsed.type, None)  # torch.cuda, torch.mps, torch.xpu, ...: each can count its devices
    available = backend.device_count() if backend is not None and hasattr(backend, "device_count") else 0
    if available == 0 or not backend.is_available():
        cpu_only_build = parsed.type == "cuda" and not torch.version.cuda
        why = f" (torch {torch.__version__} is built without CUDA)" if cpu_only_build else ""
        raise ValueError(f"--device {device}: no {parsed.type} device available here{why}; use --device cpu")
    if parsed.index is not None and parsed.index >= available:
        raise ValueError(f"--device {device}: this machine has {available} {parsed.type} device(s), numbered from 0")
    return parsed


def compute_dtype(saved: str, device: torch.device, requested: str | None = None) -> str:
    """The dtype a model runs in on `device`: `requested` when given, else its config's dtype, except that
    half precision follows what the device computes fast. On a CPU, float16 runs as bfloat16: CPUs with
    bfloat16 instructions (AVX512-BF16, AMX, Arm BF16) compute it natively while float16 is emulated (1.9x
    slower per answer there), and on the others both are emulated and bfloat16 cannot overflow. CUDA GPUs
    without bfloat16 (before Ampere) run bfloat16 as float16. float32 stays float32."""
    if requested is not None:
        return requested
    if saved == "float16" and device.type == "cpu":
        return "bfloat16"
    if saved == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "float16"
    return saved


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions that torch's oneDNN kernels use."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def _warn_if_emulated(dtype: str, device: torch.device) -> None:
    if device.type == "cpu" and dtype in ("bfloat16", "float16") and not cpu_computes_bfloat16():
        log.warning(
            "this CPU has no bfloat16 instructions, so %s is emulated: --dtype float32 answers several times "
            "faster (5x measured on AVX2) if twice the memory of the weights is free",
            dtype,
        )


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Tensors created inside are `dtype`: a model built here is initialised directly in it, never as a
    float32 copy cast afterwards (twice the memory of a half-precision 7B model)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def load_model(
    source: str | Path,
    *,
    eva: str | Path | None = None,
    llama: str | Path | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
    seed: int = 0,
    prompt_style: str | None = None,
    merge_lora: bool = False,
    quantize: str | None = None,
    image_size: int | None = None,
):
    """`dtype` and `prompt_style` (see `skyeye.prompts`) override what the source's config says; without
    `dtype`, the config's dtype adapted to the device (`compute_dtype`). `merge_lora` adds LoRA into the
    weights for inference (see SkyEye.merge_lora); a model to train or save stays unmerged. `quantize`
    ("int8", "int4") stores the LLM's Linear weights as integers for inference (the vision tower's as int8),
    LoRA merged first (see skyeye.model.quantize). `image_size` feeds a conv tower images of another side
    (SkyEyeConfig.resize_input): a later training stage that looks closer."""
    from skyeye.model.quantize import check_quantization, quantize_model
    from skyeye.model.release import load_release
    from skyeye.model.skyeye import SkyEye

    target = check_device(device)  # before any weights are read: a 7B load is minutes to waste
    check_quantization(quantize, target)
    path = Path(source)
    if is_checkpoint(path):
        model = load_checkpoint(path, compute_dtype(read_config(path).dtype, target, dtype), image_size)
    elif path.is_file() and path.suffix in (".pth", ".pt", ".bin"):
        if eva is None or llama is None:
            raise ValueError(
                f"{path} is a released SkyEyeGPT/MiniGPT-v2 checkpoint: it holds only the trained parts, so "
                "also give the EVA-CLIP-g weights (eva=/--eva eva_vit_g.pth) and the LLaMA-2-chat folder "
                "(llama=/--llama DIR)"
            )
        release = load_preset("skyeyegpt-7b")
        if image_size is not None:
            release.resize_input(image_size, str(path))
        dtype = compute_dtype(release.dtype, target, dtype)
        model = load_release(path, eva, llama, dtype=dtype, allow_pickle=allow_pickle)
    elif is_preset(source) or path.suffix in (".yaml", ".yml") and path.is_file():
        cfg = load_preset(str(source)) if is_preset(source) else SkyEyeConfig.from_yaml(path)
        cfg.dtype = compute_dtype(cfg.dtype, target, dtype)
        if image_size is not None:
            cfg.resize_input(image_size, str(source))
        if llama is not None:
            tokenizer = load_tokenizer(llama)
        elif cfg.tokenizer is not None:
            tokenizer = load_tokenizer(resolve_tokenizer_path(cfg.tokenizer))
        else:
            raise ConfigError(f"preset {source!r} takes its tokenizer from a LLaMA folder: pass llama=/--llama")
        torch.manual_seed(seed)
        with default_dtype(getattr(torch, cfg.dtype)):
            model = SkyEye(cfg, tokenizer)  # learning parts turn float32 inside (set_trainable)
    else:
        raise FileNotFoundError(
            f"{source}: not a model preset ({', '.join(preset_names())}), a model config .yaml, "
            "a SkyEye checkpoint folder (with skyeye.yaml) or a released .pth checkpoint"
        )
    if prompt_style is not None:
        model.cfg.prompt_style = prompt_style
        model.cfg.validate(f"--prompt-style for {source}")
    _warn_if_emulated(model.cfg.dtype, target)
    if quantize is not None:  # before the move: the device never holds the full-precision model
        model = quantize_model(model.eval(), quantize)
    model = model.to(device).eval()
    return model.merge_lora() if merge_lora else model
