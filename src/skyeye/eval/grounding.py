"""Visual-grounding accuracy: the box the model writes against the reference box, by IoU in pixels.

The model writes boxes on the 0..100 grid of `skyeye.boxes`; they are decoded to pixels of the item's image
and compared with the reference pixel box there, so non-square images are scored in their own geometry.

The grid is coarse: one step is 1/100 of the image side, and decoding gives the top-left corner of a grid
cell, so even a perfectly predicted grid box (the reference passed through `pixel_to_grid`) decodes to each
reference coordinate floored to the cell below it. On a big box this costs little IoU; on a box a few cells
wide it can cost most of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from skyeye.boxes import PixelBox, box_area, grid_to_pixel, iou, parse_boxes

THRESHOLDS = (0.25, 0.5, 0.75, 0.9)
PER_CLASS_THRESHOLD = 0.5  # the headline accuracy, broken down by object class where items name theirs
PER_CLASS_ACCURACY = f"Acc@{PER_CLASS_THRESHOLD:g}"


def first_box_in_pixels(text: str, width: float, height: float) -> PixelBox | None:
    """The first box written in `text`, in pixels of a `width` x `height` image; None when there is none.

    A grounding answer names one object, so when the model writes several boxes only the first counts (the
    rest are not searched for a better match); an answer without a parseable box is a miss.
    """
    boxes = parse_boxes(text)
    return grid_to_pixel(boxes[0], width, height) if boxes else None


def _overlap(prediction: PixelBox | None, reference: Sequence[float]) -> tuple[float, float, float]:
    """(IoU, intersection, union); a missing prediction overlaps nothing and leaves the reference as union."""
    if prediction is None:
        return 0.0, 0.0, box_area(reference)
    ratio = iou(prediction, reference)
    # From IoU = I / U and U = A + B - I: U = (A + B) / (1 + IoU), so IoU is defined in one place only.
    union = (box_area(prediction) + box_area(reference)) / (1 + ratio)
    return ratio, ratio * union, union


def _check_item(index: int, item: Mapping) -> None:
    if not isinstance(item.get("prediction"), str):
        raise ValueError(f"item {index} needs a text 'prediction', got {item.get('prediction')!r}")
    for field, size in (("box", 4), ("image_size", 2)):
        value = item.get(field)
        if not isinstance(value, Sequence) or len(value) != size:
            raise ValueError(f"item {index} needs {field!r} with {size} numbers, got {value!r}")


def grounding_scores(items: Sequence[Mapping], thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """Acc@t (share of items with IoU >= t), mean and cumulative IoU over grounding answers.

    Each item has `prediction` (the generated text), `box` (reference pixel box [x1, y1, x2, y2]) and
    `image_size` ([width, height]). A miss (no box in the answer) has IoU 0. `mean_IoU` averages the items'
    IoU; `cumulative_IoU` is the sum of intersections over the sum of unions, so big objects weigh more, and a
    miss adds its reference area to the unions. Also returns `misses` and `n`, and when every item names its
    object `class`, `per_class`: {class: {"Acc@0.5", "n"}}.
    """
    if not items:
        raise ValueError("no items to score")
    overlaps, misses = [], 0
    for index, item in enumerate(items):
        _check_item(index, item)
        width, height = item["image_size"]
        try:
            prediction = first_box_in_pixels(item["prediction"], width, height)
        except ValueError as error:  # a non-positive image size
            raise ValueError(f"item {index}: {error}") from error
        misses += prediction is None
        overlaps.append(_overlap(prediction, item["box"]))
    ious = [ratio for ratio, _, _ in overlaps]
    total_union = sum(union for _, _, union in overlaps)
    scores = {f"Acc@{t:g}": sum(ratio >= t for ratio in ious) / len(ious) for t in thresholds}
    scores |= {
        "mean_IoU": sum(ious) / len(ious),
        "cumulative_IoU": sum(inter for _, inter, _ in overlaps) / total_union if total_union > 0 else 0.0,
        "misses": misses,
        "n": len(ious),
    }
    if all(isinstance(item.get("class"), str) for item in items):
        scores["per_class"] = _per_class([item["class"] for item in items], ious)
    return scores


def _per_class(classes: Sequence[str], ious: Sequence[float]) -> dict[str, dict]:
    hits: dict[str, list[bool]] = {}
    for name, ratio in zip(classes, ious, strict=True):
        hits.setdefault(name, []).append(ratio >= PER_CLASS_THRESHOLD)
    return {name: {PER_CLASS_ACCURACY: sum(h) / len(h), "n": len(h)} for name, h in sorted(hits.items())}
