"""Pretraining a from-scratch vision tower as a classifier, before instruction tuning (`tower:` in a config).

SkyEyeGPT starts from EVA-CLIP, pretrained on billions of image-text pairs. A tower trained from scratch on a
CPU has no such start, and learning scenes only through the language model's loss costs about three times
more compute per image seen, because the decoder runs too. So the tower first learns alone: the mean of its
tokens goes to a linear head trained with cross-entropy against each record's answer (e.g. RSIVQA's "what is
the theme of this picture?" → "farmland"). The head is thrown away afterwards; the tower keeps what it
learned, and its tokens keep their spatial layout for grounding.

Images are decoded once and held in memory at the tower's input size (27 KB each at 96 px); crops, flips and
quarter turns are drawn from a seeded generator, so the phase is reproducible. Every `save_every` epochs it
checkpoints to out/checkpoint (as train/state.py does: whole or not at all, no pickles), and a run killed
during it continues from there, reaching the weights an uninterrupted phase reaches.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skyeye import atomic
from skyeye.images import load_image
from skyeye.settings import ConfigError, to_plain
from skyeye.train import state
from skyeye.train.config import AugmentConfig, TowerConfig
from skyeye.train.optim import fused_adam
from skyeye.train.records import RecordIndex

WEIGHTS_FILE = "tower.safetensors"
REPORT_FILE = "tower.json"
CHECKPOINT_DIR = "checkpoint"  # the phase's latest checkpoint, removed when the phase ends
CLASSIFIER_FILE, GENERATOR_FILE, PROGRESS_FILE = "classifier.safetensors", "generator.pt", "progress.json"


@dataclass
class LabelledImages:
    pixels: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]


def labelled_images(index: RecordIndex, classes: list[str], size: int, progress: bool) -> LabelledImages:
    """One (image, answer) pair per record; the label is the record's last answer."""
    from tqdm import tqdm

    pixels, labels = [], []
    for number in tqdm(range(len(index)), desc="loading tower images", unit=" images", disable=not progress):
        record, root = index.record(number)
        if len(record.images) != 1:
            raise ConfigError(f"{record.id}: tower pretraining needs one image per record, not {len(record.images)}")
        image = load_image(root / record.images[0]).image.resize((size, size), resample=3)  # bicubic
        pixels.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        answer = record.turns[-1]["assistant"].strip().lower()
        labels.append(classes.index(answer) if answer in classes else -1)
    return LabelledImages(torch.stack(pixels), torch.tensor(labels))


def class_names(index: RecordIndex) -> list[str]:
    return sorted({index.record(n)[0].turns[-1]["assistant"].strip().lower() for n in range(len(index))})


def augmented(batch: torch.Tensor, settings: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """uint8 [B, 3, S, S] → float [B, 3, S, S] in 0..1 with a random crop (resized back), flip and quarter turn."""
    size = batch.shape[-1]
    out = torch.empty(batch.shape, dtype=torch.float32)
    for i, image in enumerate(batch.float().div(255)):
        draws = torch.rand(4, generator=generator).tolist()
        side = max(1, round(size * (settings.crop_scale + (1 - settings.crop_scale) * draws[0])))
        top, left = int(draws[1] * (size - side + 1)), int(draws[2] * (size - side + 1))
        view = image[:, top : top + side, left : left + side]
        if side != size:
            view = F.interpolate(view[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        if settings.flip and draws[3] < 0.5:
            view = view.flip(-1)
        if settings.rotate:
            view = torch.rot90(view, int(torch.randint(4, (1,), generator=generator)), (-2, -1))
        out[i] = view
    return out


class TowerClassifier(nn.Module):
    def __init__(self, tower: nn.Module, classes: int, mean, std):
        super().__init__()
        self.tower = tower
        self.head = nn.Linear(tower.width, classes)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, unit_pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower((unit_pixels - self.mean) / self.std).mean(dim=1))


def accuracy(classifier: TowerClassifier, data: LabelledImages, batch_size: int = 64) -> float:
    classifier.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.labels), batch_size):
            logits = classifier(data.pixels[start : start + batch_size].float().div(255))
            correct += int((logits.argmax(-1) == data.labels[start : start + batch_size]).sum())
    classifier.train()
    return correct / len(data.labels)


def pretrain_tower(model, cfg: TowerConfig, out: Path, seed: int, progress: bool = True) -> dict:
    """Trains `model.visual_encoder` in place, writes out/tower.safetensors and out/tower.json, returns the report;
    continues from out/checkpoint when a killed run left one."""

    vision = model.cfg.vision
    train_index = RecordIndex(cfg.data, 0)
    val_specs = [replace(spec, splits=["val"]) for spec in cfg.data]
    try:
        val_index = RecordIndex(val_specs, 0)
    except ConfigError:
        val_index = None
    classes = class_names(train_index)
    size = cfg.image_size or vision.image_size
    if vision.kind != "conv" and size != vision.image_size:
        raise ConfigError(f"tower.image_size {size}: only a conv tower learns at another size than its image_size")
    train = labelled_images(train_index, classes, size, progress)
    val = labelled_images(val_index, classes, size, progress) if val_index else None
    say(f"tower pretraining: {len(train.labels):,} images at {size} px, {len(classes)} classes"
        + (f", {len(val.labels):,} val images" if val else ""))  # fmt: skip

    torch.manual_seed(seed)
    classifier = TowerClassifier(model.visual_encoder, len(classes), vision.mean, vision.std).train()
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train.labels) / cfg.batch_size)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=fused_adam(classifier))  # fmt: skip
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                   pct_start=0.15)  # fmt: skip
    phase = {"tower": to_plain(cfg), "seed": seed, "classes": classes, "train_images": len(train.labels)}

    def epoch_loss() -> float:
        order = torch.randperm(len(train.labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            chosen = order[start : start + cfg.batch_size]
            logits = classifier(augmented(train.pixels[chosen], cfg.augment, generator))
            loss = F.cross_entropy(logits, train.labels[chosen], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        return total / steps_per_epoch

    history = train_epochs(out / CHECKPOINT_DIR, phase, classifier, optimizer, schedule, generator, cfg, epoch_loss,
                           (lambda: accuracy(classifier, val)) if val is not None else None,
                           metric=("val_accuracy", "val accuracy"), title="tower pretraining", name="tower",
                           progress=progress)  # fmt: skip
    model.visual_encoder.eval()
    report = {"classes": classes, "train_images": len(train.labels), "history": history,
              "unlabelled_val_images": int((val.labels < 0).sum()) if val else 0}  # fmt: skip
    finish_phase(out, REPORT_FILE, report, WEIGHTS_FILE, model.visual_encoder.state_dict())
    return report


def train_epochs(checkpoint: Path, phase: dict, learner, optimizer, schedule, generator, settings, epoch_loss,
                 evaluate, metric: tuple[str, str], title: str, name: str, progress: bool,
                 figure: str = "loss") -> list[dict]:  # fmt: skip
    """A phase's epochs, from its checkpoint in `checkpoint` when a killed run left one of the same `phase`, with a
    new checkpoint every `settings.save_every` epochs; returns the history, an entry per epoch. `epoch_loss()` trains
    one epoch and returns its mean loss (or the mean of another `figure`); `evaluate()` (None: no val data) gives the
    val figure, recorded under metric[0] every `settings.eval_every` epochs and at the last, and said as metric[1]
    without a progress bar."""
    from tqdm import tqdm

    history = resume_phase(checkpoint, phase, learner, optimizer, schedule, generator, title)
    bar = tqdm(range(len(history), settings.epochs), initial=len(history), total=settings.epochs, desc=title,
               unit=" epochs", disable=not progress)  # fmt: skip
    key, said = metric
    for epoch in bar:
        entry = {"epoch": epoch + 1, figure: round(epoch_loss(), 4)}
        if evaluate is not None and ((epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs):
            entry[key] = round(evaluate(), 4)
        history.append(entry)
        bar.set_postfix({k: v for k, v in entry.items() if k != "epoch"})
        if not progress and key in entry:
            say(f"{name} epoch {entry['epoch']}: {figure.replace('_', ' ')} {entry[figure]}, {said} {entry[key]:.3f}")
        if (epoch + 1) % settings.save_every == 0 and epoch + 1 < settings.epochs:
            save_phase(checkpoint, phase, history, learner, optimizer, schedule, generator)
    return history


def finish_phase(out: Path, report_file: str, report: dict, weights_file: str, weights: dict) -> None:
    """Writes a finished phase's report and weights into `out` and removes its checkpoint."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / report_file, json.dumps(report, indent=1))
    # The weights last: their presence is what tells a later run that the phase is done.
    partial = atomic.partial_of(out / weights_file)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(partial))
    atomic.publish_file(partial)
    if (out / CHECKPOINT_DIR).exists():
        shutil.rmtree(out / CHECKPOINT_DIR)


def save_phase(folder: Path, phase: dict, history: list[dict], classifier, optimizer, schedule, generator) -> None:
    """Checkpoints the phase after its `len(history)` epochs."""
    from safetensors.torch import save_file

    partial = atomic.begin_folder(folder)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(partial / CLASSIFIER_FILE))
    torch.save(optimizer.state_dict(), partial / state.OPTIMIZER_FILE)
    torch.save(schedule.state_dict(), partial / state.SCHEDULER_FILE)
    torch.save(generator.get_state(), partial / GENERATOR_FILE)
    state.save_rng(partial, 0)
    (partial / PROGRESS_FILE).write_text(json.dumps({"phase": phase, "history": history}))
    atomic.publish_folder(partial)


def resume_phase(folder: Path, phase: dict, classifier, optimizer, schedule, generator, title: str) -> list[dict]:
    """Restores the checkpoint in `folder` and returns the history of its epochs; [] (start afresh) without one,
    or with one of another phase (another config, seed or data)."""
    progress_file = folder / PROGRESS_FILE
    if not progress_file.is_file():
        return []
    try:
        saved = json.loads(progress_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{progress_file}: not valid JSON ({err})") from err
    if not isinstance(saved, dict) or saved.get("phase") != phase or not isinstance(saved.get("history"), list):
        say(f"{folder}: a checkpoint of another {title} phase (config, seed or data differ); starting the phase again")
        return []
    classifier.load_state_dict(state.read_run_weights(folder / CLASSIFIER_FILE, classifier.state_dict()))
    optimizer.load_state_dict(state.load_plain(folder / state.OPTIMIZER_FILE))
    schedule.load_state_dict(state.load_plain(folder / state.SCHEDULER_FILE))
    generator.set_state(state.load_plain(folder / GENERATOR_FILE))
    state.load_rng(state.rng_file(folder, 0))
    say(f"{title}: resumed from {folder} after epoch {len(saved['history'])}")
    return saved["history"]


def load_pretrained_tower(model, out: Path) -> bool:
    weights = out / WEIGHTS_FILE
    if not weights.is_file():
        return False
    model.visual_encoder.load_state_dict(state.read_run_weights(weights, model.visual_encoder.state_dict()))
    return True


def say(text: str) -> None:
    print(text, file=sys.stderr)
