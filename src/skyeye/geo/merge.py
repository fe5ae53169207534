"""Boxes found in overlapping tiles, merged into one box per object: a deterministic, documented rule.

Boxes are in scene pixels, each with the tile it was found in and a label (its phrase, or the question).

1. A box of zero width or height is dropped and counted.
2. A box is *cut* when one of its sides lies within one grid cell (1/100 of the tile, the precision of a box
   in text) of its tile's edge, and that edge is inside the scene (a seam, not the scene's border): the object
   may go on in the neighbouring tile.
3. Two boxes of the same label (case-insensitive) from different tiles are the same object when their IoU is
   at least 0.5 (seen whole by both tiles of an overlap), or when either is cut and they overlap or touch
   within one grid cell (two parts of an object cut by a seam). Objects chain: a bridge over three tiles is
   one object.
4. Each object keeps the box farthest from its tile's seams (the one its tile saw with the most context;
   ties go to the earlier box in tile order), grown to include every cut part: the union of the kept box and
   the cut boxes.

Nothing depends on the order in which tiles were answered, only on the boxes and tiles themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from skyeye.boxes import GRID, PixelBox, iou
from skyeye.geo.tiles import Tile

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class TileBox:
    label: str
    box: PixelBox  # scene pixels
    tile: Tile


@dataclass(frozen=True)
class MergedBox:
    kept: int  # index (into the boxes given) of the box kept for the object
    box: PixelBox  # the kept box grown to include every cut part
    members: tuple[int, ...]  # indices of every box of the object, the kept one included


def merge_boxes(boxes: Sequence[TileBox], width: int, height: int) -> tuple[list[MergedBox], int]:
    """One `MergedBox` per object (in the order of their kept boxes) and the number of degenerate boxes dropped."""
    usable = [i for i, b in enumerate(boxes) if b.box[2] > b.box[0] and b.box[3] > b.box[1]]
    seams = {i: _seam_sides(boxes[i], width, height) for i in usable}
    parent = {i: i for i in usable}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in _touching_pairs(boxes, usable):
        a, b = boxes[i], boxes[j]
        if a.tile == b.tile or a.label.casefold() != b.label.casefold():
            continue
        cut = bool(seams[i][0] or seams[j][0])
        if iou(a.box, b.box) >= IOU_THRESHOLD or cut:
            ri, rj = root(i), root(j)
            parent[max(ri, rj)] = min(ri, rj)

    groups: dict[int, list[int]] = {}
    for i in usable:
        groups.setdefault(root(i), []).append(i)
    merged = []
    for members in groups.values():
        kept = max(members, key=lambda i: (seams[i][1], -i))
        parts = [boxes[kept].box] + [boxes[i].box for i in members if seams[i][0]]
        box = (min(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts), max(p[3] for p in parts))
        merged.append(MergedBox(kept, box, tuple(members)))
    merged.sort(key=lambda m: m.kept)
    return merged, len(boxes) - len(usable)


def _seam_sides(found: TileBox, width: int, height: int) -> tuple[int, float]:
    """(how many of the box's sides touch a seam of its tile, its distance to the nearest seam)."""
    tile, (x1, y1, x2, y2) = found.tile, found.box
    cell_x, cell_y = tile.width / GRID, tile.height / GRID
    left, top, right, bottom = tile.box
    # (is the tile edge a seam, distance of the box to it, one grid cell along that axis)
    sides = [
        (left > 0, x1 - left, cell_x),
        (top > 0, y1 - top, cell_y),
        (right < width, right - x2, cell_x),
        (bottom < height, bottom - y2, cell_y),
    ]
    cut = sum(1 for seam, distance, cell in sides if seam and distance <= cell + 1e-9)
    nearest = min((distance for seam, distance, _ in sides if seam), default=math.inf)
    return cut, nearest


def _touching_pairs(boxes: Sequence[TileBox], usable: list[int]) -> list[tuple[int, int]]:
    """Pairs (i < j) of usable boxes that overlap or come within one grid cell of each other, in order."""
    if len(usable) < 2:
        return []
    import numpy as np
    import shapely

    grown = []
    for i in usable:
        (x1, y1, x2, y2), tile = boxes[i].box, boxes[i].tile
        # Half a cell each way: two boxes within one grid cell of each other touch.
        half_x, half_y = tile.width / GRID / 2, tile.height / GRID / 2
        grown.append(shapely.box(x1 - half_x, y1 - half_y, x2 + half_x, y2 + half_y))
    found = shapely.STRtree(grown).query(grown, predicate="intersects")
    index = np.asarray(usable)
    pairs = {(int(index[a]), int(index[b])) for a, b in zip(*found, strict=True) if a < b}
    return sorted(pairs)
