r"""How boxes are written as text (SkyEyeGPT / MiniGPT-v2 convention); the only module that knows it.

A box is written on a 0..100 grid independent of the image size: a pixel coordinate x of an image W pixels
wide becomes `int(x / W * 100)` (floor), y uses the height H the same way, so non-square images keep their
aspect. The four grid values are written as `{<x1><y1><x2><y2>}`. A phrase that names boxes is written
`<p>phrase</p> {<x1><y1><x2><y2>}`, and several boxes of one phrase are joined by `<delim>`:
`<p>plane</p> {<1><2><3><4>}<delim>{<5><6><7><8>}`.

MiniGPT-v2's evaluation finds boxes with the regex `\{<\d{1,3}><\d{1,3}><\d{1,3}><\d{1,3}>\}`; the
parser here accepts the same boxes and also tolerates whitespace between the braces, brackets and digits,
because generated text sometimes contains it.

Pixel boxes are continuous (x right, y down): a box covering pixels 0..9 inclusive is (0, 0, 10, 10).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

GRID = 100

GridBox = tuple[int, int, int, int]
PixelBox = tuple[float, float, float, float]

# [0-9] rather than \d: \d also matches other scripts' digits, which the model never writes as coordinates.
_NUMBER = "[0-9]{1,3}"


def _box_pattern(number: str) -> str:
    return r"\{" + (r"\s*<\s*" + number + r"\s*>") * 4 + r"\s*\}"


_BOX_RE = re.compile(_box_pattern(f"({_NUMBER})"))
# The phrase may not contain braces, so a box is never swallowed into a phrase: every box that
# `parse_boxes` finds also turns up in exactly one group of `parse_phrases`.
_GROUP_RE = re.compile(
    r"(?:<p>(?P<phrase>(?:(?!</?p>)[^{}])*)</p>\s*)?"
    rf"(?P<boxes>{_box_pattern(_NUMBER)}(?:\s*<delim>\s*{_box_pattern(_NUMBER)})*)"
)


@dataclass(frozen=True)
class Grounded:
    """Boxes found together in text, and the phrase written right before them (None when there was none)."""

    phrase: str | None
    boxes: tuple[GridBox, ...]


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image width and height must be positive, got width={width!r}, height={height!r}")


def pixel_to_grid(box: Sequence[float], width: float, height: float) -> GridBox:
    """Pixel box of a `width` x `height` image -> grid box (floor, clamped into 0..100)."""
    _check_size(width, height)
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"pixel box must have finite coordinates, got {tuple(box)!r}")
    x1, y1, x2, y2 = box
    return (_to_grid(x1, width), _to_grid(y1, height), _to_grid(x2, width), _to_grid(y2, height))


def _to_grid(value: float, size: float) -> int:
    # Written exactly as `int(v / size * 100)`: the reference code does so, and computing it another way
    # (say v * 100 / size) rounds differently at cell borders.
    return min(GRID, max(0, int(value / size * GRID)))


def grid_to_pixel(box: Sequence[int], width: float, height: float) -> PixelBox:
    """Grid box -> pixel box of a `width` x `height` image (the top-left corner of each grid cell)."""
    _check_size(width, height)
    x1, y1, x2, y2 = box
    return (x1 / GRID * width, y1 / GRID * height, x2 / GRID * width, y2 / GRID * height)


def _grid_value(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"grid coordinate must be an int in 0..{GRID}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"grid coordinate must be an int in 0..{GRID}, got {value!r}") from None
    if not 0 <= number <= GRID:
        raise ValueError(f"grid coordinate must be in 0..{GRID}, got {number}")
    return number


def coordinate_token(value: int) -> str:
    """One grid coordinate as it is written: `<value>` (a single token in the bundled vocabulary)."""
    return f"<{_grid_value(value)}>"


def format_box(box: Sequence[int]) -> str:
    """Grid box -> `{<x1><y1><x2><y2>}`."""
    if len(box) != 4:
        raise ValueError(f"a grid box has 4 coordinates, got {len(box)}: {tuple(box)!r}")
    return "{" + "".join(coordinate_token(v) for v in box) + "}"


def format_boxes(boxes: Iterable[Sequence[int]]) -> str:
    """Grid boxes -> `{<..><..><..><..>}<delim>{<..><..><..><..>}`."""
    return "<delim>".join(format_box(box) for box in boxes)


def format_phrase(phrase: str, boxes: Iterable[Sequence[int]]) -> str:
    """Phrase and its grid boxes -> `<p>phrase</p> {<..><..><..><..>}<delim>{...}`."""
    if not phrase.strip():
        raise ValueError("phrase must not be empty")
    for forbidden in ("{", "}", "<p>", "</p>"):
        if forbidden in phrase:
            raise ValueError(f"phrase must not contain {forbidden!r}, got {phrase!r}")
    written = format_boxes(boxes)
    if not written:
        raise ValueError(f"phrase {phrase!r} needs at least one box")
    return f"<p>{phrase}</p> {written}"


def _ordered(values: Sequence[str]) -> GridBox | None:
    x1, y1, x2, y2 = (int(v) for v in values)
    if max(x1, y1, x2, y2) > GRID:
        return None
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_boxes(text: str) -> list[GridBox]:
    """Every well-formed box in `text`, in order; values above 100 drop the box, corners are reordered."""
    found = (_ordered(match.groups()) for match in _BOX_RE.finditer(text))
    return [box for box in found if box is not None]


def map_boxes(text: str, change: Callable[[GridBox], Sequence[int]]) -> str:
    """`text` with every well-formed box rewritten as `change(box)` (e.g. the box after the image is flipped);
    everything else, malformed boxes included, is kept as written."""

    def rewrite(match: re.Match) -> str:
        box = _ordered(match.groups())
        return match.group(0) if box is None else format_box(change(box))

    return _BOX_RE.sub(rewrite, text)


def parse_phrases(text: str) -> list[Grounded]:
    """Boxes of `text` grouped by the `<p>phrase</p>` written right before them (phrase None if absent).

    Only `<delim>` (whitespace around it allowed) ties further boxes to a group; a box after anything else
    starts a new group without a phrase.
    """
    groups = []
    for match in _GROUP_RE.finditer(text):
        boxes = tuple(parse_boxes(match["boxes"]))
        if boxes:
            groups.append(Grounded((match["phrase"] or "").strip() or None, boxes))
    return groups


def box_area(box: Sequence[float]) -> float:
    """The area of a continuous (x1, y1, x2, y2) box; a reversed box has area 0."""
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two continuous pixel boxes; reversed or empty boxes count as area 0."""
    # No `+ 1` on widths and heights: that belongs to inclusive integer pixel indices, and a peer's code that
    # added it to small (0..1) boxes inflated every score. Boxes here are continuous coordinates.
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    inter = box_area((max(ax1, bx1), max(ay1, by1), min(ax2, bx2), min(ay2, by2)))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class FoundBox:
    """A box found in text: its phrase (if one was written), grid box and box in pixels of the image."""

    phrase: str | None
    grid: GridBox
    pixels: PixelBox

    def summary(self, number: int) -> str:
        """One line for people: `box 1: runway  pixels (52, 0, 310, 16)  grid {<10><0><60><50>}`."""
        x1, y1, x2, y2 = self.pixels
        return (f"box {number}: {self.phrase or '-'}  pixels ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})  "
                f"grid {format_box(self.grid)}")  # fmt: skip


def find_boxes(text: str, width: float, height: float) -> list[FoundBox]:
    """Every box in `text` with its phrase, converted to pixels of a `width` x `height` image."""
    return [
        FoundBox(grounded.phrase, box, grid_to_pixel(box, width, height))
        for grounded in parse_phrases(text)
        for box in grounded.boxes
    ]
