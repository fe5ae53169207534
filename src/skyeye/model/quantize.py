"""Weight-only int8 and int4 quantization of the Linear layers, for inference (`load_model(quantize=...)`,
`skyeye ask --quantize int8`): the 7B LLM's weights take 6.7 GB in int8 and 3.6 GB in int4 instead of 13.5 GB,
and on a CPU without bfloat16 instructions the EVA-g tower's 1.0 GB instead of 2.0 GB.

int8 keeps one scale per output row (symmetric); int4 one scale and zero point per group of up to 128 inputs.
The products run on PyTorch's own CPU kernels for these layouts (`aten._weight_int8pack_mm`,
`aten._weight_int4pack_mm_for_cpu`: what torch.compile lowers such layers to), which read the integers
directly with bfloat16 activations. One 4096x11008 layer at batch 1 on 2 cores of a CPU without bfloat16
instructions took 16 ms in bfloat16, 10 ms in int8 and 8 ms in int4 this way, against 113 ms with torchao
0.18's Int8WeightOnlyConfig in eager mode (it converts the whole weight back to bfloat16 on every call and
leaves fusing that to torch.compile) and 216 ms with bitsandbytes 0.50's nf4 on CPU.

The embeddings and the output layer (lm_head) keep the model's dtype: 4% of the 7B LLM's weights, and the
output layer's errors would go straight into every token's choice. The vision tower's Linear layers take int8
(with either kind: 4-bit weights without calibration lose more in a ViT, whose outliers every visual token
carries) only where that is also faster, see `tower_takes_int8`. The alignment layer (one layer, trained) is
not touched. LoRA is merged first: an update cannot be added to integer weights afterwards.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

QUANTIZATIONS = ("int8", "int4")
# The activation dtype the CPU kernels are fast at: float32 and float16 inputs run 5x slower in them, so a
# float32 model's activations are rounded to bfloat16 for each quantized product (a smaller error than int8's).
KERNEL_DTYPE = torch.bfloat16
INT4_GROUP_SIZES = (128, 64, 32)  # the CPU kernel's sizes that make sense for LLaMA widths, largest first
INT4_ROWS_MULTIPLE = 16  # the CPU kernel packs output rows by 16
log = logging.getLogger(__name__)


def check_quantization(quantize: str | None, device: torch.device) -> None:
    """Refuses, before any weights are read, a quantization that is unknown or that `device` cannot run."""
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize {quantize!r}: not one of {', '.join(QUANTIZATIONS)}")
    if quantize == "int4" and device.type not in ("cpu", "meta"):  # meta: shapes only (to count bytes)
        raise ValueError(
            f"--quantize int4 runs on CPU only (PyTorch's int4 CPU kernel), not on {device}; use int8 there"
        )


class QuantizedLinear(nn.Module):
    """A Linear layer whose weight is integers, for inference: it refuses to train."""

    kind = ""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def train(self, mode: bool = True) -> QuantizedLinear:
        if mode:
            raise ValueError(
                f"the model's Linear layers are quantized to {self.kind} for inference and cannot train; "
                "load the model without quantize (--quantize)"
            )
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = self.product(flat.to(KERNEL_DTYPE) if x.device.type == "cpu" else flat).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"


class Int8Linear(QuantizedLinear):
    kind = "int8"

    def __init__(self, linear: nn.Linear):
        super().__init__(linear)
        # The one float32 copy (180 MB for 7B's largest layer), worked on in place; never the layer's own weight.
        weight = linear.weight.detach().to(torch.float32, copy=True)
        tiny = torch.finfo(KERNEL_DTYPE).tiny  # an all-zero row: any scale, its integers are 0
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=tiny).to(KERNEL_DTYPE)
        # Rounded with the scale as stored, so that integers x scale are the weights the layer computes with.
        levels = weight.div_(scale.float()[:, None]).round_().clamp_(-127, 127)
        self.register_buffer("weight", levels.to(torch.int8))
        self.register_buffer("scale", scale)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scale)
        return x @ self.dequantized(x.dtype).t()  # other devices: PyTorch has no such kernel for them

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight.to(dtype) * self.scale.to(dtype)[:, None]


class Int4Linear(QuantizedLinear):
    kind = "int4"

    def __init__(self, linear: nn.Linear, group_size: int):
        super().__init__(linear)
        self.group_size = group_size
        rows, groups = self.out_features, self.in_features // group_size
        weight = linear.weight.detach().to(torch.float32, copy=True).reshape(rows, groups, group_size)
        low, high = weight.amin(-1, keepdim=True), weight.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=torch.finfo(KERNEL_DTYPE).tiny).to(KERNEL_DTYPE).float()
        # The kernel's convention (tinygemm's): weight = (q - 8) * scale + zero, q in 0..15.
        zero = (low + 8 * scale).to(KERNEL_DTYPE).float()
        levels = weight.sub_(zero).div_(scale).add_(8).round_().clamp_(0, 15).to(torch.int32).reshape(rows, -1)
        # [rows, inputs / 2] uint8; the tiling argument (2, 4 or 8, for CUDA's layout) gives the same bytes on CPU.
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(levels, 8)
        self.register_buffer("weight", packed)
        scales_and_zeros = torch.cat([scale, zero], dim=-1).transpose(0, 1).contiguous()  # [groups, rows, 2]
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(KERNEL_DTYPE))

    @staticmethod
    def group_size_for(linear: nn.Linear) -> int | None:
        """The largest group size the kernel accepts for this layer, None if it accepts none."""
        if linear.out_features % INT4_ROWS_MULTIPLE:
            return None
        return next((size for size in INT4_GROUP_SIZES if linear.in_features % size == 0), None)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight, self.group_size, self.scales_and_zeros)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


def quantize_model(model, kind: str):
    """Merges LoRA, then replaces the LLM's Linear layers (but the output layer) by `kind` ones, and the vision
    tower's by int8 ones where `tower_takes_int8`; in place. LLM layers whose shapes the int4 kernel does not
    take stay as they were; their count is logged."""
    check_quantization(kind, model.device)
    model.merge_lora()
    llm = model.llama_model
    with torch.no_grad():
        kept, total = _replace_linears(llm, kind, skip=llm.get_output_embeddings())
    if tower_takes_int8(model.device):
        quantize_tower(model)
    if kept:
        log.warning("%s: %d of %d LLM Linear layers kept in %s (the int4 kernel needs inputs divisible by 32 and "
                    "outputs by 16)", model.cfg.name, kept, total, model.dtype)  # fmt: skip
    return model


def tower_takes_int8(device: torch.device) -> bool:
    """Whether the vision tower is quantized too: only on a CPU without bfloat16 instructions. A whole image's
    1,025 tokens make its products compute-bound: there the int8 kernel ran two EVA-g blocks 2.4x faster than
    bfloat16, while on a CPU with AMX it was 4.9x slower (bench/int8.py), and on a GPU int8 converts each layer
    back as it runs. The LLM, read once per generated token, is quantized everywhere."""
    from skyeye.model.loading import cpu_computes_bfloat16

    return device.type == "cpu" and not cpu_computes_bfloat16()


def quantize_tower(model):
    """Replaces the vision tower's Linear layers by int8 ones, in place (`quantize_model` does so where
    `tower_takes_int8`)."""
    with torch.no_grad():
        _replace_linears(model.visual_encoder, "int8")
    return model


def _replace_linears(parent: nn.Module, kind: str, skip: nn.Module | None = None) -> tuple[int, int]:
    """Replaces the Linear layers under `parent` (merged LoRA layers by their base layer, which holds the sum)
    by `kind` ones; returns (layers kept as they were, layers seen)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from skyeye.model.skyeye import LORA_MARKER

    layers: dict[str, nn.Linear] = {}
    for name, module in parent.named_modules():
        if LORA_MARKER in name or name.endswith(".base_layer"):
            continue  # inside a merged LoRA layer, which is replaced whole
        if isinstance(module, BaseTunerLayer):
            layers[name] = module.get_base_layer()
        elif isinstance(module, nn.Linear) and module is not skip:
            layers[name] = module
    total, kept = len(layers), 0
    while layers:  # each float layer is let go once replaced: at most one is held beside the integer ones
        name, linear = layers.popitem()
        if kind == "int8":
            parent.set_submodule(name, Int8Linear(linear))
        elif (group_size := Int4Linear.group_size_for(linear)) is not None:
            parent.set_submodule(name, Int4Linear(linear, group_size))
        else:
            kept += 1
    return kept, total


def quantization_of(model) -> str | None:
    """The kind of the model's quantized layers ("int8", "int4"), None when it has none."""
    return next((module.kind for module in model.modules() if isinstance(module, QuantizedLinear)), None)
