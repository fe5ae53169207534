"""One config object describes a SkyEye model; presets are YAML files under `configs/model/`.

Unknown keys are an error naming the key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from skyeye.images import CLIP_MEAN, CLIP_STD
from skyeye.prompts import PROMPT_STYLES
from skyeye.settings import ConfigError, build, read_yaml_mapping, to_plain

TRAINABLE_PARTS = ("vision", "alignment", "llm", "lora")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class VisionConfig:
    kind: str = "eva_vit"
    image_size: int = 448
    patch_size: int = 14
    width: int = 1408
    depth: int = 39
    heads: int = 16
    mlp_dim: int = 6144
    norm_eps: float = 1e-6
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_pixels(self, images: list):
        """RGB PIL images → this tower's input, a float tensor [N, 3, image_size, image_size]."""
        import torch

        from skyeye.images import to_pixel_tensor

        return torch.stack([to_pixel_tensor(image, self.image_size, self.mean, self.std) for image in images])


@dataclass
class LLMConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0


@dataclass
class LoraSettings:
    """LoRA on the LLM (and optionally the alignment layer); r = 0 disables it."""

    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    on_alignment: bool = False


@dataclass
class NumberLineSettings:
    """Lengths of the fixed position code (model/number_line.py) added to each visual token and to each
    coordinate token's input and output embeddings; 0 and 0: off. Sized against the trained vectors they are
    added to (the bundled model's visual tokens have length ~32, its coordinate embeddings ~0.8)."""

    visual: float = 0.0
    coordinates: float = 0.0

    @property
    def active(self) -> bool:
        return self.visual > 0 or self.coordinates > 0


@dataclass
class BoxRefinerSettings:
    """A box refiner (model/box_refiner.py): a conv tower of the vision tower's shape with a dense head over these
    object classes, which moves the boxes the decoder writes onto the objects it detects."""

    classes: list[str]


@dataclass
class SkyEyeConfig:
    name: str = "custom"
    vision: VisionConfig = field(default_factory=VisionConfig)
    merge_tokens: int = 4
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    trainable: list[str] = field(default_factory=lambda: ["alignment", "lora"])
    # "bundled:NAME" names a tokenizer shipped in the package; otherwise a folder path. None: the tokenizer
    # comes with the weights (the LLaMA folder or the checkpoint folder).
    tokenizer: str | None = None
    max_txt_len: int = 500
    max_context_len: int = 3800
    dtype: str = "float32"
    prompt_style: str = "skyeye"
    number_line: NumberLineSettings = field(default_factory=NumberLineSettings)
    box_refiner: BoxRefinerSettings | None = None

    @property
    def visual_tokens_per_image(self) -> int:
        return self.vision.num_patches // self.merge_tokens

    def validate(self, origin: str = "config") -> SkyEyeConfig:
        v = self.vision
        problems = []
        if v.image_size % v.patch_size:
            problems.append(f"vision.image_size {v.image_size} is not a multiple of patch_size {v.patch_size}")
        if v.width % v.heads:
            problems.append(f"vision.width {v.width} is not divisible by vision.heads {v.heads}")
        if self.merge_tokens < 1 or v.num_patches % self.merge_tokens:
            problems.append(f"merge_tokens {self.merge_tokens} does not divide the {v.num_patches} patches")
        if self.llm.hidden_size % self.llm.num_heads:
            problems.append(f"llm.hidden_size {self.llm.hidden_size} is not divisible by llm.num_heads")
        unknown = sorted(set(self.trainable) - set(TRAINABLE_PARTS))
        if unknown:
            problems.append(f"trainable has unknown parts {unknown}; choose from {list(TRAINABLE_PARTS)}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {list(DTYPES)}")
        if self.prompt_style not in PROMPT_STYLES:
            problems.append(f"prompt_style {self.prompt_style!r} is not one of {list(PROMPT_STYLES)}")
        for name in ("visual", "coordinates"):
            if getattr(self.number_line, name) < 0:
                problems.append(f"number_line.{name} must be >= 0 (0: off), got {getattr(self.number_line, name)}")
        if self.lora.r < 0:
            problems.append("lora.r must be >= 0")
        if self.box_refiner is not None:
            if v.kind != "conv":
                problems.append(f"box_refiner needs a conv vision tower, not vision.kind {v.kind!r}")
            if not self.box_refiner.classes or len(set(self.box_refiner.classes)) != len(self.box_refiner.classes):
                problems.append("box_refiner.classes must name one or more classes, each once")
        if problems:
            raise ConfigError(f"{origin}: " + "; ".join(problems))
        return self

    def resize_input(self, image_size: int, origin: str) -> SkyEyeConfig:
        """Feeds the tower images of side `image_size`: more cells, so more visual tokens, each coded by its place
        on the number line. Only a conv tower keeps its weights at another size (a ViT's position embeddings fit
        one grid)."""
        if image_size == self.vision.image_size:
            return self
        if self.vision.kind != "conv":
            raise ConfigError(f"{origin}: image_size {image_size}: only a conv tower takes another size than its "
                              f"image_size {self.vision.image_size}, not vision.kind {self.vision.kind!r}")  # fmt: skip
        self.vision.image_size = image_size
        return self.validate(origin)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> SkyEyeConfig:
        return build(cls, data, origin).validate(origin)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SkyEyeConfig:
        return cls.from_dict(read_yaml_mapping(path, "model config"), origin=str(path))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def preset_dir() -> Path:
    return Path(str(resources.files("skyeye") / "configs" / "model"))


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_preset(name: str) -> SkyEyeConfig:
    path = preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no model preset named {name!r}; presets: {', '.join(preset_names())}")
    return SkyEyeConfig.from_yaml(path)
