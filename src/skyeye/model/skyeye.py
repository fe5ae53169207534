"""The SkyEye model: vision tower → merge of 4 neighbouring tokens → alignment layer → LLaMA decoder.

Module names follow MiniGPT-v2 (`visual_encoder`, `ln_vision`, `llama_proj`, `llama_model`) so the
released checkpoints map onto it with few renames. LoRA is injected with peft into the LLaMA projections
named in the config and, optionally, into the alignment layer (as SkyEyeGPT does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from skyeye.model.box_refiner import BoxRefiner
from skyeye.model.checkpoint import CheckpointError
from skyeye.model.config import BoxRefinerSettings, ConfigError, NumberLineSettings, SkyEyeConfig
from skyeye.model.number_line import NumberLine
from skyeye.model.vision import build_vision_tower

if TYPE_CHECKING:
    from skyeye.model.answer import Answer
    from skyeye.prompts import Conversation

LORA_MARKER = "lora_"


def llama_config(cfg: SkyEyeConfig):
    from transformers import LlamaConfig

    llm = cfg.llm
    return LlamaConfig(
        vocab_size=llm.vocab_size,
        hidden_size=llm.hidden_size,
        intermediate_size=llm.intermediate_size,
        num_hidden_layers=llm.num_layers,
        num_attention_heads=llm.num_heads,
        num_key_value_heads=llm.num_kv_heads,
        max_position_embeddings=llm.max_position_embeddings,
        rms_norm_eps=llm.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": llm.rope_theta},
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        dtype=cfg.dtype,
    )


def _with_plain_strides(module, args: tuple) -> tuple | None:
    """The output layer's input laid out as a fresh tensor. `generate` hands it the last position of each row, a
    view whose strides skip the rest of the row; PyTorch's matmul then treats it as a batch of matrices and
    copies the whole transposed weight for every row: 5.8 s instead of 15 ms for LLaMA-7B's output layer at
    batch 4 in bfloat16 on a CPU, once per answer."""
    hidden = args[0]
    if hidden.dim() < 3 or hidden.stride() == _plain_strides(hidden.shape):
        return None
    return (hidden.clone(memory_format=torch.contiguous_format), *args[1:])


def _plain_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class SkyEye(nn.Module):
    def __init__(self, cfg: SkyEyeConfig, tokenizer=None, vision_tower: nn.Module | None = None, llm=None):
        """Builds every part from `cfg`; `vision_tower` / `llm` pass in parts already loaded with weights."""
        from transformers import LlamaForCausalLM

        super().__init__()
        if tokenizer is not None and len(tokenizer) > cfg.llm.vocab_size:
            raise ConfigError(
                f"{cfg.name}: the tokenizer has {len(tokenizer)} tokens but llm.vocab_size is {cfg.llm.vocab_size}"
            )
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.visual_encoder = vision_tower if vision_tower is not None else build_vision_tower(cfg.vision)
        # MiniGPT-v2 never trains ln_vision and never saves it, so it keeps its initial weight 1 / bias 0.
        self.ln_vision = nn.LayerNorm(cfg.vision.width)
        self.llama_proj = nn.Linear(cfg.vision.width * cfg.merge_tokens, cfg.llm.hidden_size)
        self.llama_model = llm if llm is not None else LlamaForCausalLM(llama_config(cfg))
        self.number_line: NumberLine | None = None
        self.set_number_line(cfg.number_line)
        self.box_refiner = BoxRefiner(cfg.vision, cfg.box_refiner.classes) if cfg.box_refiner else None
        if cfg.lora.r:
            self._inject_lora()
        self.set_trainable(cfg.trainable)
        # Where each part's weights were read from (loaders fill it in), to name the file a bad tensor came from.
        self.weight_files: dict[str, str] = {}
        output_layer = self.llama_model.get_output_embeddings()
        output_layer.register_forward_pre_hook(_with_plain_strides)
        self._output_check = output_layer.register_forward_hook(self._check_output)

    def set_number_line(self, settings: NumberLineSettings) -> None:
        """Adds the fixed position code of model/number_line.py (it has no weights, so a model trained without it
        can take it on) and records it in the config. A model that has the same one already is left as it is, so a
        later training stage may name the number line its model was trained with."""
        if self.number_line is not None:
            if settings == self.cfg.number_line:
                return
            raise ConfigError(f"{self.cfg.name}: the model has a number line already ({self.cfg.number_line}), "
                              f"not {settings}")  # fmt: skip
        self.cfg.number_line = settings
        if not settings.active:
            return
        if self.tokenizer is None:
            raise ConfigError(f"{self.cfg.name}: number_line needs the tokenizer (its coordinate tokens)")
        self.number_line = NumberLine(self.cfg, self.tokenizer)
        self.number_line.install(self.llama_model)

    def add_box_refiner(self, classes: list[str]) -> BoxRefiner:
        """Gives the model a fresh box refiner over `classes` (or keeps the one it has over the same classes), its
        tower starting from the vision tower's weights, and records it in the config."""
        if self.box_refiner is not None:
            if self.box_refiner.classes != list(classes):
                raise ConfigError(f"{self.cfg.name}: the model's box refiner knows {self.box_refiner.classes}, "
                                  f"not {list(classes)}")  # fmt: skip
            return self.box_refiner
        settings = BoxRefinerSettings(list(classes))
        self.cfg.box_refiner = settings
        self.cfg.validate(self.cfg.name)
        refiner = BoxRefiner(self.cfg.vision, settings.classes).to(self.device)
        refiner.tower.load_state_dict(self.visual_encoder.state_dict())
        refiner.requires_grad_(False)
        self.box_refiner = refiner
        return refiner

    def _inject_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        lora = self.cfg.lora
        targets = rf"llama_model\..*\.({'|'.join(lora.target_modules)})"
        if lora.on_alignment:
            targets += "|llama_proj"
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
        inject_adapter_in_model(config, self, low_cpu_mem_usage=self.llama_proj.weight.is_meta)

    def set_trainable(self, parts: Sequence[str]) -> None:
        """Which parts learn: any of vision, alignment, llm, lora; everything else is frozen, and a frozen tower is
        put in eval mode at once (see `train`).

        Learning parameters are kept in float32 whatever dtype the frozen base uses, as MiniGPT-v2 does: in
        half precision an optimizer step smaller than the weight's rounding step is lost.
        """
        for name, param in self.named_parameters():
            param.requires_grad = parameter_part(name) in parts
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
        self._frozen_in_eval()

    def to_dtype(self, dtype: torch.dtype) -> SkyEye:
        """Frozen parameters and buffers in `dtype`; learning parameters stay float32 (see set_trainable)."""
        learning = {name: param.detach() for name, param in self.named_parameters() if param.requires_grad}
        # A learning layer's buffers (batch norm's running statistics) stay with its float32 parameters: the
        # layer computes with both, and mixed dtypes fail.
        kept_buffers = {
            (module, name): buffer
            for module in self.modules() if any(p.requires_grad for p in module.parameters(recurse=False))
            for name, buffer in module.named_buffers(recurse=False) if buffer is not None
        }  # fmt: skip
        self.to(dtype)
        for name, param in self.named_parameters():
            if name in learning:
                param.data = learning[name]
        for (module, name), buffer in kept_buffers.items():
            module._buffers[name] = buffer
        return self

    @property
    def lora_merged(self) -> bool:
        return any(getattr(module, "merged", False) for module in self._lora_layers())

    def _lora_layers(self) -> list[nn.Module]:
        if not self.cfg.lora.r:  # no adapters: peft need not even be imported (0.3 s of every CLI command)
            return []
        from peft.tuners.lora import LoraLayer

        return [module for module in self.modules() if isinstance(module, LoraLayer)]

    def merge_lora(self) -> SkyEye:
        """Adds every LoRA update into its base weight (peft's merge) for inference: answers stay the same
        within rounding while the adapter's two extra matrix products per layer disappear. A merged model
        cannot train or be saved (its base weights are no longer the saved ones: unmerging in half
        precision would not give them back exactly); load it without `merge_lora` for that."""
        for module in self._lora_layers():
            if not module.merged:
                module.merge()
        return self

    def _check_output(self, module, inputs, logits: torch.Tensor) -> None:
        """NaN or infinite weights make every answer empty; the first forward pass says which tensor holds them.

        Checking the last position of the first output costs nothing, while scanning every weight at load
        would read all of a memory-mapped 7B checkpoint; the scan runs only once an output is not finite.
        """
        if torch.isfinite(logits[..., -1, :]).all():
            self._output_check.remove()
            return
        bad = [
            name
            for name, tensor in [*self.named_parameters(), *self.named_buffers()]
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()
        ]
        if bad:
            more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
            source = self.weight_files.get(parameter_part(bad[0]), f"model {self.cfg.name}")
            raise CheckpointError(f"{source}: {bad[0]} holds NaN or infinite values{more}")
        raise ValueError(
            f"model {self.cfg.name}: its output is not finite although every weight is finite; the activations "
            f"overflow {self.dtype}? load it with dtype bfloat16 or float32 (--dtype)"
        )

    def train(self, mode: bool = True) -> SkyEye:
        """A frozen vision tower stays in eval mode, so its batch norms keep the statistics they learned."""
        if mode and self.lora_merged:
            raise ValueError(f"model {self.cfg.name}: its LoRA is merged for inference and cannot train; "
                             "load it without merge_lora")  # fmt: skip
        super().train(mode)
        self._frozen_in_eval()
        return self

    def _frozen_in_eval(self) -> None:
        if not any(p.requires_grad for p in self.visual_encoder.parameters()):
            self.visual_encoder.eval()
        if self.box_refiner is not None:  # trained only on its own (train/box_refiner.py)
            self.box_refiner.eval()

    @property
    def device(self) -> torch.device:
        return self.llama_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llama_model.get_input_embeddings().weight.dtype

    def visual_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [N, 3, S, S] → frozen-tower tokens [N, patches, width] (what a visual cache stores)."""
        return self.ln_vision(self.visual_encoder(pixels))

    def project_visual(self, features: torch.Tensor) -> torch.Tensor:
        """Tower tokens → visual tokens [N, patches / merge, llm hidden] in the LLM's embedding space."""
        batch, patches, width = features.shape
        # Row-major groups of 4 consecutive patches (horizontal neighbours), exactly MiniGPT-v2's view.
        merged = features.reshape(batch, patches // self.cfg.merge_tokens, width * self.cfg.merge_tokens)
        # A learning alignment layer is float32 while a frozen tower may give half-precision features.
        visual = self.llama_proj(merged.to(self.llama_proj.weight.dtype))
        return visual if self.number_line is None else self.number_line.add_to_visual(visual)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project_visual(self.visual_features(pixels))

    def embed(
        self,
        input_ids: torch.Tensor,
        image_mask: torch.Tensor,
        pixels: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the image slots filled from `pixels`, or from cached tower `features`."""
        embeds = self.llama_model.get_input_embeddings()(input_ids)
        slots = int(image_mask.sum())
        if slots == 0:
            return embeds
        if pixels is None and features is None:
            raise ValueError(f"the batch has {slots} image token slots but no images")
        visual = self.project_visual(features) if features is not None else self.encode_images(pixels)
        visual = visual.to(embeds.dtype)
        if visual.shape[0] * visual.shape[1] != slots:
            raise ValueError(
                f"the batch has {slots} image token slots but {visual.shape[0]} images give "
                f"{visual.shape[0] * visual.shape[1]} visual tokens"
            )
        return embeds.masked_scatter(image_mask.unsqueeze(-1), visual.reshape(-1, visual.shape[-1]))

    def forward(
        self,
        input_ids: torch.Tensor,
        image_mask: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        output_attentions: bool = False,
    ):
        """Returns transformers' CausalLMOutputWithPast; `.loss` is the mean over unmasked answer tokens.
        `output_attentions` returns the weights of the layers whose attention implementation gives them (eager)."""
        embeds = self.embed(input_ids, image_mask, pixels, features)
        return self.llama_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels,
                                output_attentions=output_attentions)  # fmt: skip

    def ask(
        self, image, text: str, task: str | None = None, history: Conversation | None = None, **generation
    ) -> Answer:
        """Answers one question about an image (a path, a PIL image, or a list of them for video frames)."""
        from skyeye.model.answer import ask_many

        return ask_many(self, [image], [text], tasks=[task], histories=[history], **generation)[0]

    def ask_many(
        self,
        images: list,
        texts: list[str],
        tasks: list[str | None] | None = None,
        histories: list[Conversation | None] | None = None,
        batch_size: int = 8,
        **generation,
    ) -> list[Answer]:
        """Batched `ask` for evaluation: one left-padded generate call per batch of `batch_size`."""
        from skyeye.model.answer import ask_many

        return ask_many(self, images, texts, tasks, histories, batch_size=batch_size, **generation)

    def iter_answers(
        self,
        images: list,
        texts: list[str],
        tasks: list[str | None] | None = None,
        histories: list[Conversation | None] | None = None,
        batch_size: int = 8,
        **generation,
    ) -> Iterator[list[Answer]]:
        """`ask_many` batch by batch, as each is answered (to save answers as they come)."""
        from skyeye.model.answer import iter_answers

        return iter_answers(self, images, texts, tasks, histories, batch_size=batch_size, **generation)

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for name, param in self.named_parameters():
            part = counts.setdefault(parameter_part(name), {"trainable": 0, "frozen": 0})
            part["trainable" if param.requires_grad else "frozen"] += param.numel()
        return counts

    @classmethod
    def from_pretrained(cls, source: str | Path, **kwargs) -> SkyEye:
        """Loads a model; see `skyeye.model.loading.load_model` for the accepted sources and options."""
        from skyeye.model.loading import load_model

        return load_model(source, **kwargs)

    def save_pretrained(self, folder: str | Path) -> Path:
        from skyeye.model.checkpoint import save_checkpoint

        return save_checkpoint(self, folder)


def parameter_part(name: str) -> str:
    """vision (tower and ln_vision), alignment (llama_proj), lora (every LoRA tensor), box_refiner (never trained
    with the decoder) or llm."""
    if LORA_MARKER in name:
        return "lora"
    if name.startswith("box_refiner."):
        return "box_refiner"
    if name.startswith(("visual_encoder.", "ln_vision.")):
        return "vision"
    if name.startswith("llama_proj."):
        return "alignment"
    return "llm"
