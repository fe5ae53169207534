"""Pascal-VOC XML parsing and the pixel-box checks shared by the grounding and regions adapters.

VOC XML (DIOR, DIOR-RSVG, HRRSD): `<annotation>` with `<filename>`, `<size><width>/<height>`, and one
`<object>` per object: `<name>`, optional `<difficult>`, `<bndbox>` with `<xmin>/<ymin>/<xmax>/<ymax>`,
and, in DIOR-RSVG, `<description>` (the referring expression). Coordinates are kept as written (VOC's
1-based integers are not shifted): `check_box` clips a box that passes the image border by at most
`tolerance` pixels (the usual `xmax == width` or `width + 1` of 1-based annotations) and refuses the rest.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

BOX_TOLERANCE = 1.0  # pixels a box may pass the image border and still be clipped


class VocError(ValueError):
    """A VOC file that cannot be parsed; the message names the file and the problem."""


@dataclass
class VocObject:
    name: str
    box: list[float] | None  # [xmin, ymin, xmax, ymax] as written; None when the bndbox is missing or bad
    difficult: bool = False
    description: str = ""
    box_error: str = ""  # why `box` is None


@dataclass
class VocAnnotation:
    path: Path
    filename: str  # `<filename>` or "" when absent
    size: tuple[int, int] | None  # `<size>` as written (width, height); the image file is what counts
    objects: list[VocObject] = field(default_factory=list)


def _text(element: ET.Element | None, tag: str) -> str:
    child = element.find(tag) if element is not None else None
    return " ".join((child.text or "").split()) if child is not None else ""


def _number(element: ET.Element, tag: str) -> float:
    value = float(_text(element, tag))  # ValueError when missing or not a number
    if not math.isfinite(value):
        raise ValueError(f"{tag} is {value}")
    return value


def parse_voc(path: Path) -> VocAnnotation:
    """Parse one VOC XML file; raises VocError for a file that is not well-formed VOC XML."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as error:
        raise VocError(f"{path.name}: {error}") from error
    if root.tag != "annotation":
        raise VocError(f"{path.name}: root element is <{root.tag}>, not <annotation>")
    size = None
    size_element = root.find("size")
    if size_element is not None:
        try:
            size = (int(_number(size_element, "width")), int(_number(size_element, "height")))
        except ValueError:
            size = None
    annotation = VocAnnotation(path, _text(root, "filename"), size)
    for element in root.findall("object"):
        obj = VocObject(_text(element, "name"), None, _text(element, "difficult") == "1",
                        _text(element, "description"))  # fmt: skip
        bndbox = element.find("bndbox")
        if bndbox is None:
            obj.box_error = "no <bndbox>"
        else:
            try:
                obj.box = [_number(bndbox, tag) for tag in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError as error:
                obj.box_error = f"bad <bndbox>: {error}"
        annotation.objects.append(obj)
    return annotation


_OBJECT_TAG = re.compile(rb"<object[\s>]")


def count_objects(path: Path) -> int:
    """How many `<object>` elements a file holds, counted in the raw bytes (for files that do not parse)."""
    try:
        return len(_OBJECT_TAG.findall(path.read_bytes()))
    except OSError:
        return 0


def check_box(box, width: int, height: int, tolerance: float = BOX_TOLERANCE) -> tuple[list[float] | None, str, str]:
    """(clipped box, "", "") for a usable box, else (None, reason, detail).

    Reasons: "degenerate box" (x2 <= x1 or y2 <= y1 as written), "box outside image" (passes the border
    by more than `tolerance` pixels, or keeps no area once clipped). `tolerance=math.inf` clips any box
    that still overlaps the image (DOTA polygons of objects cut by the border).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    numbers = f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] in {width}x{height} image"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None, "degenerate box", numbers
    if x2 <= x1 or y2 <= y1:
        return None, "degenerate box", numbers
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        return None, "box outside image", numbers
    clipped = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, "box outside image", numbers
    return clipped, "", ""
