"""Training a model's box refiner (model/box_refiner.py) on its own (`box_refiner:` in a training config).

The refiner's tower starts from the model's vision tower (it already knows scenes) and learns, with its dense
head, like a one-stage detector on a coarse grid (as FCOS / CenterNet do): per cell, per class, whether an object's
centre lies in the cell (focal loss), and the box of the largest object centred there (L1 + generalised IoU). The
decoder is not involved, and neither is its loss: a step costs one small tower's forward and backward.

Labels come from detection records' answers (`<p>airplanes</p> {<x1><y1><x2><y2>}<delim>...`): the boxes of each
phrase, on the 0..100 grid of the whole image; a class named in singular and plural ("ship", "ships") is one class.
Images are decoded once at twice the tower's input side, so random crops keep their detail; crops, flips and
quarter turns move the boxes with them. The phase checkpoints every `save_every` epochs and resumes as the tower's
classification phase does (train/tower.py).

On the `val` split of the same records it reports what it gives a decoder that points at the right object: for
each class that occurs once in an image, the box of the cell that scores the class highest, right at IoU >= 0.5.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skyeye.boxes import GRID, iou, parse_phrases
from skyeye.images import load_image
from skyeye.settings import ConfigError, to_plain
from skyeye.train import state
from skyeye.train.config import BoxRefinerConfig
from skyeye.train.records import RecordIndex
from skyeye.train.tower import CHECKPOINT_DIR, finish_phase, say, train_epochs

WEIGHTS_FILE, REPORT_FILE = "box_refiner.safetensors", "box_refiner.json"
HEAD_LR_SCALE = 3.0  # the fresh head learns faster than the pretrained tower beneath it
FOCAL_GAMMA, FOCAL_ALPHA = 2.0, 0.25  # RetinaNet's focal loss: most cells hold no object of a class


@dataclass
class BoxedImages:
    pixels: torch.Tensor  # uint8 [N, 3, L, L]
    boxes: list[torch.Tensor]  # per image [n, 5]: class, x1, y1, x2, y2 in 0..1 of the image


def class_of(phrase: str, phrases: set[str]) -> str:
    singular = phrase[:-1] if phrase.endswith("s") else phrase
    return singular if singular in phrases else phrase


def labelled_boxes(index: RecordIndex) -> list[tuple[Path, list[tuple[str, tuple[int, ...]]]]]:
    """(image path, [(phrase, grid box)]) per image of the selected records, the boxes of all its records joined."""
    by_image: dict[Path, list] = {}
    for number in range(len(index)):
        record, root = index.record(number)
        if len(record.images) != 1:
            raise ConfigError(f"{record.id}: box_refiner needs one image per record, not {len(record.images)}")
        groups = [group for turn in record.turns for group in parse_phrases(turn["assistant"])]
        if not groups or any(group.phrase is None for group in groups):
            raise ConfigError(f"{record.id}: box_refiner needs answers of named boxes (<p>phrase</p> {{box}}), "
                              "as detection records have")  # fmt: skip
        boxes = by_image.setdefault(root / record.images[0], [])
        boxes += [(group.phrase.lower(), box) for group in groups for box in group.boxes]
    return list(by_image.items())


def boxed_images(labelled, class_ids: dict[str, int], side: int, progress: bool, what: str) -> BoxedImages:
    """The images decoded at `side` px and their boxes, each labelled with its phrase's class id."""
    from tqdm import tqdm

    pixels, boxes = [], []
    for path, named in tqdm(labelled, desc=f"loading {what} images", unit=" images", disable=not progress):
        image = load_image(path).image.resize((side, side), resample=3)  # bicubic
        pixels.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        rows = [(class_ids[phrase], *(v / GRID for v in box)) for phrase, box in named]
        boxes.append(torch.tensor(rows, dtype=torch.float32).view(-1, 5))
    return BoxedImages(torch.stack(pixels), boxes)


def augmented(image: torch.Tensor, boxes: torch.Tensor, size: int, crop_scale: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """uint8 [3, L, L] and its boxes → float [3, size, size] in 0..1 cropped, flipped and turned, and the boxes whose
    centre stayed inside, clipped to it."""
    draws = torch.rand(4, generator=generator).tolist()
    full = image.shape[-1]
    side = max(1, round(full * (crop_scale + (1 - crop_scale) * draws[0])))
    top, left = int(draws[1] * (full - side + 1)), int(draws[2] * (full - side + 1))
    view = image[:, top : top + side, left : left + side].float().div(255)
    view = F.interpolate(view[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    boxes = boxes.clone()
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - left / full) * (full / side)
    boxes[:, [2, 4]] = (boxes[:, [2, 4]] - top / full) * (full / side)
    centre_x, centre_y = (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 2] + boxes[:, 4]) / 2
    boxes = boxes[(centre_x > 0) & (centre_x < 1) & (centre_y > 0) & (centre_y < 1)]
    boxes[:, 1:] = boxes[:, 1:].clamp(0, 1)
    if draws[3] < 0.5:
        view = view.flip(-1)
        boxes[:, [1, 3]] = 1 - boxes[:, [3, 1]]
    for _ in range(int(torch.randint(4, (1,), generator=generator))):
        view = torch.rot90(view, 1, (-2, -1))  # counter-clockwise: (x, y) → (y, 1 - x)
        boxes[:, 1:] = torch.stack([boxes[:, 2], 1 - boxes[:, 3], boxes[:, 4], 1 - boxes[:, 1]], dim=1)
    return view, boxes


def targets(boxes: list[torch.Tensor], side: int, classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: which classes are centred in each cell of a side x side grid [B, N, C], the largest box centred
    there [B, N, 4] and whether there is one [B, N]."""
    centred = torch.zeros(len(boxes), side * side, classes)
    box = torch.zeros(len(boxes), side * side, 4)
    area = torch.zeros(len(boxes), side * side)
    for row, image_boxes in enumerate(boxes):
        for label, x1, y1, x2, y2 in image_boxes.tolist():
            column = min(int((x1 + x2) / 2 * side), side - 1)
            cell = min(int((y1 + y2) / 2 * side), side - 1) * side + column
            centred[row, cell, int(label)] = 1
            if (x2 - x1) * (y2 - y1) > area[row, cell]:
                area[row, cell] = (x2 - x1) * (y2 - y1)
                box[row, cell] = torch.tensor([x1, y1, x2, y2])
    return centred, box, area > 0


def generalized_iou_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean 1 − GIoU (Rezatofighi et al., 2019) of [n, 4] boxes."""
    inter_low = torch.maximum(predicted[:, :2], target[:, :2])
    inter_high = torch.minimum(predicted[:, 2:], target[:, 2:])
    inter = (inter_high - inter_low).clamp(min=0).prod(dim=1)
    union = (predicted[:, 2:] - predicted[:, :2]).clamp(min=0).prod(dim=1)
    union = union + (target[:, 2:] - target[:, :2]).prod(dim=1) - inter
    hull = (torch.maximum(predicted[:, 2:], target[:, 2:]) - torch.minimum(predicted[:, :2], target[:, :2])).prod(dim=1)
    return (1 - inter / union.clamp(min=1e-6) + (hull - union) / hull.clamp(min=1e-6)).mean()


def dense_box_loss(logits, boxes, centred, target_box, has_box) -> torch.Tensor:
    """Focal loss on the class-centre cells (per object) plus L1 and GIoU on the boxes of the cells that hold one."""
    bce = F.binary_cross_entropy_with_logits(logits, centred, reduction="none")
    p = torch.sigmoid(logits)
    p_true = p * centred + (1 - p) * (1 - centred)
    weight = FOCAL_ALPHA * centred + (1 - FOCAL_ALPHA) * (1 - centred)
    loss = (bce * (1 - p_true) ** FOCAL_GAMMA * weight).sum() / centred.sum().clamp(min=1)
    if has_box.any():
        predicted, target = boxes[has_box], target_box[has_box]
        loss = loss + 5 * F.l1_loss(predicted, target) + 2 * generalized_iou_loss(predicted, target)
    return loss


def unique_object_accuracy(refiner, data: BoxedImages, normalise, batch_size: int = 32) -> float:
    """Of the objects alone of their class in their image, the share whose class's best cell gives IoU >= 0.5."""
    refiner.eval()
    right = total = 0
    with torch.no_grad():
        for start in range(0, len(data.boxes), batch_size):
            logits, boxes = refiner(normalise(data.pixels[start : start + batch_size].float().div(255)))
            for row, image_boxes in enumerate(data.boxes[start : start + batch_size]):
                labels = image_boxes[:, 0].long()
                for label in labels.unique():
                    if int((labels == label).sum()) != 1:
                        continue
                    cell = int(logits[row, :, label].argmax())
                    truth = image_boxes[labels == label][0, 1:]
                    right += iou(boxes[row, cell].tolist(), truth.tolist()) >= 0.5
                    total += 1
    refiner.train()
    return right / total if total else float("nan")


def train_box_refiner(model, cfg: BoxRefinerConfig, out: Path, seed: int, progress: bool = True) -> dict:
    """Gives `model` a box refiner and trains it, writes out/box_refiner.safetensors and out/box_refiner.json, returns
    the report; continues from out/checkpoint when a killed run left one."""

    vision = model.cfg.vision
    if vision.kind != "conv":
        raise ConfigError(f"box_refiner: a box refiner is a conv tower, and {model.cfg.name} has a {vision.kind!r} one")
    size = vision.image_size
    train = labelled_boxes(RecordIndex(cfg.data, 0))
    try:
        val = labelled_boxes(RecordIndex([replace(spec, splits=["val"]) for spec in cfg.data], 0))
    except ConfigError:
        val = []
    phrases = {phrase for _, boxes in train + val for phrase, _ in boxes}
    classes = sorted({class_of(phrase, phrases) for phrase in phrases})
    class_ids = {phrase: classes.index(class_of(phrase, phrases)) for phrase in phrases}
    train_images = boxed_images(train, class_ids, 2 * size, progress, "box refiner")
    val_images = boxed_images(val, class_ids, size, progress, "box refiner val") if val else None
    say(f"box refiner: {len(train):,} images at {size} px, {len(classes)} classes"
        + (f", {len(val):,} val images" if val else ""))  # fmt: skip

    torch.manual_seed(seed)
    refiner = model.add_box_refiner(classes).float().requires_grad_(True).train()
    mean = torch.tensor(vision.mean).view(1, 3, 1, 1)
    std = torch.tensor(vision.std).view(1, 3, 1, 1)

    def normalise(unit_pixels: torch.Tensor) -> torch.Tensor:
        return (unit_pixels - mean) / std

    side = size // vision.patch_size
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    groups = [{"params": refiner.tower.parameters(), "lr": cfg.lr},
              {"params": refiner.head.parameters(), "lr": cfg.lr * HEAD_LR_SCALE}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[group["lr"] for group in groups],
                                                   total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1)  # fmt: skip
    phase = {"box_refiner": to_plain(cfg), "seed": seed, "classes": classes, "train_images": len(train)}

    def epoch_loss() -> float:
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            views = [augmented(train_images.pixels[i], train_images.boxes[i], size, cfg.crop_scale, generator)
                     for i in order[start : start + cfg.batch_size].tolist()]  # fmt: skip
            logits, boxes = refiner(normalise(torch.stack([view for view, _ in views])))
            loss = dense_box_loss(logits, boxes, *targets([view_boxes for _, view_boxes in views], side, len(classes)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        return total / steps_per_epoch

    evaluate = (lambda: unique_object_accuracy(refiner, val_images, normalise)) if val_images is not None else None
    history = train_epochs(out / CHECKPOINT_DIR, phase, refiner, optimizer, schedule, generator, cfg, epoch_loss,
                           evaluate, metric=("val_unique_object_acc50", "val unique-object Acc@0.5"),
                           title="box refiner", name="box refiner", progress=progress)  # fmt: skip
    refiner.requires_grad_(False).eval()
    report = {"classes": classes, "train_images": len(train), "val_images": len(val), "history": history}
    finish_phase(out, REPORT_FILE, report, WEIGHTS_FILE, refiner.state_dict())
    return report


def load_trained_refiner(model, out: Path) -> bool:
    """Gives `model` the refiner a finished phase left in `out`; False when there is none."""
    weights = out / WEIGHTS_FILE
    if not weights.is_file():
        return False
    try:
        classes = json.loads((out / REPORT_FILE).read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{out / REPORT_FILE}: unreadable box refiner report ({err})") from err
    refiner = model.add_box_refiner(classes)
    refiner.load_state_dict(state.read_run_weights(weights, refiner.state_dict()))
    refiner.requires_grad_(False).eval()
    return True
