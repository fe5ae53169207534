"""The training config: what model to start from, which records to learn, and how.

    model: tiny                  # a preset name, or a checkpoint folder to continue from (stage 2)
    out: runs/stage1
    data:
      - records: data/ucm        # a folder written by `skyeye data build` / `skyeye data synth`
        root: ../shared/data     # the data root its image paths are relative to (default: its stats.json)
        splits: [train]
        tasks: [caption, vqa]    # default: every task in the folder
        sources: [ucm-captions]  # default: every source in the folder
        weight: 1.0              # times each record is seen per epoch (0.5: a seeded half of them)
    steps: 2000
    batch_size: 8
    grad_accum: 1
    optim: {lr: 1.0e-4, min_lr: 1.0e-6, warmup_steps: 100, weight_decay: 0.05, clip: 1.0}

Stage 1 lists single-task records; stage 2 continues from stage 1's checkpoint (`model: runs/stage1/final`)
and adds the conversation records. Unknown keys are errors naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyeye.model.config import TRAINABLE_PARTS, NumberLineSettings
from skyeye.settings import ConfigError, apply_overrides, build, read_yaml_mapping, to_plain

PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class DataSpec:
    records: str
    root: str | None = None
    splits: list[str] = field(default_factory=lambda: ["train"])
    tasks: list[str] | None = None
    sources: list[str] | None = None  # default: every source in the folder
    weight: float = 1.0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float = 1.0
    # Learning-rate multipliers by part (vision, alignment, llm, lora), e.g. {vision: 0.1} to fine-tune a
    # pretrained tower gently while a fresh decoder learns at full rate.
    lr_scale: dict[str, float] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Random crops, flips and quarter turns of training images; off by default, and incompatible with the
    visual cache. Records whose text carries boxes or directions ("on the left") are left unaugmented."""

    flip: bool = False
    rotate: bool = False  # a random multiple of 90 degrees: top-down imagery has no "up"
    crop_scale: float = 1.0  # smallest crop side as a fraction of the image side
    # How often a scene question's answer is asked under another name of its class (class_names.ALIASES), in the
    # class list and the answer alike: text only, so it is not an image augmentation and needs no pixels.
    rename_classes: float = 0.0

    @property
    def active(self) -> bool:
        return self.flip or self.rotate or self.crop_scale < 1


@dataclass
class TowerConfig:
    """Optional first phase for a tower trained from scratch: it learns alone, as a classifier whose labels
    are the selected records' answers (e.g. RSIVQA's scene question), before instruction tuning starts."""

    data: list[DataSpec]
    epochs: int = 60
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(flip=True, rotate=True, crop_scale=0.5))
    # Side of the images the phase learns from (default: the tower's image_size). A convolutional tower
    # learns scenes at a lower resolution for a fraction of the cost and keeps its weights at any size.
    image_size: int | None = None
    eval_every: int = 5  # epochs between accuracy reports on the data's `val` split, when it has one
    save_every: int = 5  # epochs between checkpoints (out/tower/checkpoint), from which --resume continues


@dataclass
class BoxRefinerConfig:
    """Optional phase that gives the model a box refiner (model/box_refiner.py) and trains it alone on detection
    records' boxes (train/box_refiner.py); its tower starts from the model's vision tower."""

    data: list[DataSpec]
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    crop_scale: float = 0.6  # smallest crop side as a fraction of the image side; boxes follow the crop
    eval_every: int = 5
    save_every: int = 5


@dataclass
class SelfCriticalConfig:
    """Optional phase, in a stage with steps 0, that tunes a trained decoder's captions for BLEU-4 by
    self-critical sequence training on caption records (train/self_critical.py); the tower stays frozen."""

    data: list[DataSpec]
    epochs: int = 3
    batch_size: int = 16  # images per step
    samples: int = 5  # sampled captions per image; each is judged against the mean reward of the others
    lr: float = 5e-5
    max_new_tokens: int = 40
    # Weight of cross-entropy on the asked record's own caption, added to the policy gradient: it keeps the decoder's
    # wording fluent on images unlike the training set, where the reward alone lets it drift. 0: off.
    xe_weight: float = 0.0
    eval_every: int = 1
    save_every: int = 1


@dataclass
class BoxAttentionConfig:
    """The auxiliary loss of train/box_attention.py: at the positions that predict an answer box's numbers,
    these heads of these layers learn to attend to the cells the box covers. weight 0: off."""

    weight: float = 0.0
    layers: list[int] = field(default_factory=lambda: [1, 2])
    heads: list[int] = field(default_factory=lambda: [0, 1])


@dataclass
class TrainConfig:
    data: list[DataSpec] = field(default_factory=list)
    model: str = "tiny"
    out: str = "runs/train"
    trainable: list[str] | None = None  # default: the model config's `trainable`
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: str = "no"
    seed: int = 0
    group_by_length: bool = True
    cache_visual: bool = False
    max_length: int | None = None  # default: the model's max_context_len
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = False  # also log to out/tensorboard (needs the tensorboard package)
    tower: TowerConfig | None = None  # pretrain a from-scratch vision tower first (see skyeye/train/tower.py)
    box_refiner: BoxRefinerConfig | None = None  # then train a box refiner on its own (see train/box_refiner.py)
    self_critical: SelfCriticalConfig | None = None  # then tune captions for BLEU-4 (see train/self_critical.py)
    box_attention: BoxAttentionConfig = field(default_factory=BoxAttentionConfig)
    # Gives a model without one the fixed position code of model/number_line.py (it has no weights to load).
    number_line: NumberLineSettings | None = None
    # Feeds a conv tower images of this side from this stage on (default: the model's own): a later stage may look
    # closer, with more cells and so more visual tokens, each placed by the number line.
    image_size: int | None = None

    def validate(self, origin: str) -> TrainConfig:
        problems = []
        if self.steps == 0:  # a stage of phases only: the decoder does not learn
            if self.tower is None and self.box_refiner is None and self.self_critical is None:
                problems.append(
                    "steps 0 trains nothing: such a stage needs a tower, box_refiner or self_critical phase"
                )
        elif self.self_critical is not None:
            problems.append("self_critical tunes a trained decoder: put it in a stage of its own with steps 0")
        elif not self.data:
            problems.append("data lists no record folders")
        for number, spec in enumerate(self.data):
            if spec.weight <= 0:
                problems.append(f"data[{number}].weight must be > 0")
        if self.steps < 0:
            problems.append("steps must be >= 0 (0: only the stage's phases)")
        for name in ("batch_size", "grad_accum", "save_every", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if self.box_attention.weight < 0:
            problems.append("box_attention.weight must be >= 0 (0: off)")
        if self.box_attention.weight and not (self.box_attention.layers and self.box_attention.heads):
            problems.append("box_attention needs at least one layer and one head")
        if not 0 < self.augment.crop_scale <= 1:
            problems.append("augment.crop_scale must be in (0, 1]")
        if not 0 <= self.augment.rename_classes <= 1:
            problems.append("augment.rename_classes must be in [0, 1]")
        if self.cache_visual and self.augment.active:
            problems.append("cache_visual caches one view per image: it cannot be combined with augment")
        if self.cache_visual and self.trainable and "vision" in self.trainable:
            problems.append("cache_visual needs a frozen vision tower, but trainable includes vision")
        for part, scale in self.optim.lr_scale.items():
            if part not in TRAINABLE_PARTS:
                problems.append(f"optim.lr_scale.{part}: not a model part; parts: {', '.join(TRAINABLE_PARTS)}")
            elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
                problems.append(f"optim.lr_scale.{part} must be a number > 0, got {scale!r}")
        for name, phase in (
            ("tower", self.tower),
            ("box_refiner", self.box_refiner),
            ("self_critical", self.self_critical),
        ):
            if phase is None:
                continue
            if not phase.data:
                problems.append(f"{name}.data lists no record folders")
            for field_name in ("epochs", "batch_size", "eval_every", "save_every"):
                if getattr(phase, field_name) < 1:
                    problems.append(f"{name}.{field_name} must be >= 1")
        if self.tower is not None and self.tower.image_size is not None and self.tower.image_size < 16:
            problems.append("tower.image_size must be >= 16")
        if self.box_refiner is not None and not 0 < self.box_refiner.crop_scale <= 1:
            problems.append("box_refiner.crop_scale must be in (0, 1]")
        if self.self_critical is not None:
            if self.self_critical.samples < 2:
                problems.append("self_critical.samples must be >= 2 (each sample's baseline is the others' mean)")
            if self.self_critical.max_new_tokens < 1:
                problems.append("self_critical.max_new_tokens must be >= 1")
            if not self.self_critical.lr > 0:
                problems.append("self_critical.lr must be > 0")
            if self.self_critical.xe_weight < 0:
                problems.append("self_critical.xe_weight must be >= 0 (0: off)")
        if problems:
            raise ConfigError(f"{origin}: " + "; ".join(problems))
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> TrainConfig:
        return build(cls, data, origin).validate(origin)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> TrainConfig:
        data = apply_overrides(read_yaml_mapping(path, "training config"), list(overrides))
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


# Fields that chain one stage of a recipe to the next: an override of them would point every stage at one folder.
STAGE_FIELDS = ("model", "out")


def load_stages(paths: list[str | Path], overrides: list[str] = ()) -> list[TrainConfig]:
    """The configs of a training recipe, each with the same overrides, all read and checked before the first stage
    trains (a typo in the last one stops the run now, not hours in)."""
    if not paths:
        raise ConfigError(f"train: no config before the overrides {' '.join(overrides)}")
    if len(paths) > 1:
        fixed = [o for o in overrides if o.partition("=")[0] in STAGE_FIELDS]
        if fixed:
            raise ConfigError(f"train: {fixed[0]} would apply to each of the {len(paths)} stages; "
                              f"{' and '.join(STAGE_FIELDS)} are set in each stage's config")  # fmt: skip
    return [TrainConfig.load(path, overrides) for path in paths]
