"""Synthetic top-down scenes: a fixture factory for tests and a small grounding training set.

What is drawn (PIL + numpy only), scaled with the image size (dimensions below are for 256 px):
- terrain: grass, farmland (a patchwork of ploughed fields with hedgerows), desert or urban pavement, with
  low-frequency shading and mild per-pixel noise;
- features: up to two roads (asphalt strips with edge lines and dashed lane marks), water (a winding river
  or a lake with a sandy shore), an airfield apron (concrete with panel seams) and a parking lot (stalls);
- objects, each a readable class name and a tight box: "building" (rectangle with a dark edge and a gable
  or flat roof), "vehicle" (9-12 px car with windscreen and rear window, on a road lane following the road,
  in a parking stall, or on open ground), "plane" (cross-shaped silhouette with swept wings and tail, on
  the airfield or on bare ground), "ship" (pointed hull, deck and bridge, entirely on water, following the
  river), "storage tank" (grey ring, light roof, centre dot; often in rows), "tennis court" (coloured
  surface, white lines and net), "swimming pool" (blue water in a light border) and "tree" (dark irregular
  crown with a highlight). Each class is absent or present 1-6 times; objects never touch: boxes are at
  least `GAP` pixels apart, so the 1-px ring around every box shows the background only.

Box convention: continuous pixel coordinates [x1, y1, x2, y2] (x right, y down) as in `skyeye.boxes`; an
object's drawn pixels are exactly the columns x1..x2-1 and rows y1..y2-1 with at least one drawn pixel in
every first/last row and column (the box is tight), and 0 <= x1 < x2 <= size (same for y). Coordinates are
integers written as floats.

Captions (2-5 distinct lowercase sentences) are generated from the annotation only: every mention of an
object class is preceded by its count in words ("a"/"an"/"one" for a single object), and a class that is not
in the scene is never named.

Determinism: everything is drawn from one `numpy.random.Generator` seeded with the scene seed (a
non-negative int); no global random state is used, so the same (seed, size) gives the same pixels, boxes
and captions on every run and platform with the same numpy and Pillow.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from skyeye.data.sources.base import Example

REFERENCE_SIZE = 256  # object and feature dimensions are given for this size and scaled with the image
TERRAINS = ("grass", "farmland", "desert", "urban")
CLASSES = ("building", "vehicle", "plane", "ship", "storage tank", "tennis court", "swimming pool", "tree")
MAX_PER_CLASS = 6
GAP = 2  # minimum number of background pixels between the boxes of two objects
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_COUNT_P = np.array([0.34, 0.2, 0.15, 0.12, 0.1, 0.09])  # P(count = 1..6) for a class that is present


@dataclass
class Scene:
    """A rendered scene with its layers: `mask` holds i + 1 where objects[i] was drawn, 0 elsewhere."""

    seed: int
    size: int
    terrain: str
    features: list[str]
    image: np.ndarray  # (size, size, 3) uint8: the final picture
    background: np.ndarray  # (size, size, 3) uint8: the same picture before objects were drawn
    mask: np.ndarray  # (size, size) int16
    objects: list[dict]  # {"name": str, "box": [x1, y1, x2, y2]}
    captions: list[str]


# ---------------------------------------------------------------------------------------------- sprites


def _rotate(points, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.asarray(points, dtype=np.float64) @ np.array([[c, s], [-s, c]])


def _rect(cx: float, cy: float, w: float, h: float) -> list[tuple[float, float]]:
    return [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]


def _circle(cx: float, cy: float, r: float, wobble=()) -> list[tuple[float, float]]:
    n = max(12, int(r * 3))
    points = []
    for k in range(n):
        t = 2 * math.pi * k / n
        radius = r * (1 + sum(a * math.sin(f * t + p) for a, f, p in wobble))
        points.append((cx + radius * math.cos(t), cy + radius * math.sin(t)))
    return points


def _sprite(layers, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (local coordinates, later ones on top) rotated by `angle` → (rgb, mask), cropped tight."""
    rotated = [_rotate(points, angle) for points, _ in layers]
    every = np.concatenate(rotated)
    low = np.floor(every.min(0)) - 1
    width, height = (int(v) for v in np.ceil(every.max(0) - low) + 2)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for index, points in enumerate(rotated, start=1):
        draw.polygon([(float(x), float(y)) for x, y in points - low], fill=index)
    ids = np.asarray(canvas)
    rows, cols = np.flatnonzero(ids.any(1)), np.flatnonzero(ids.any(0))
    ids = ids[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    palette = np.array([(0, 0, 0)] + [color for _, color in layers], dtype=np.uint8)
    return palette[ids], ids > 0


def _shade(color, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in color)


ROOFS = [(205, 205, 198), (172, 82, 62), (92, 98, 110), (212, 192, 152), (150, 152, 158), (120, 70, 60)]
CARS = [(236, 236, 236), (36, 36, 42), (182, 32, 32), (40, 72, 165), (176, 180, 186), (222, 190, 40)]


def _building(rng, s: float, angle: float):
    w, h = rng.uniform(12, 36) * s, rng.uniform(12, 36) * s
    w, h = max(w, 6), max(h, 6)
    roof = ROOFS[rng.integers(len(ROOFS))]
    layers = [(_rect(0, 0, w, h), _shade(roof, 0.55)), (_rect(0, 0, w - 2, h - 2), roof)]
    if rng.random() < 0.5:  # gable roof: one slope in shade, with a ridge line
        layers.append((_rect(0, (h - 2) / 4, w - 2, (h - 2) / 2), _shade(roof, 0.75)))
    else:  # flat roof: an air-conditioning unit or a skylight
        u, v = rng.uniform(-0.2, 0.2) * w, rng.uniform(-0.2, 0.2) * h
        layers.append((_rect(u, v, max(2, w / 5), max(2, h / 5)), (228, 228, 224)))
    return _sprite(layers, angle)


def _vehicle(rng, s: float, angle: float):
    length, width = max(6, rng.uniform(9, 12) * s), max(3, rng.uniform(4.5, 5.5) * s)
    body = CARS[rng.integers(len(CARS))]
    glass = (28, 38, 52) if sum(body) > 200 else (120, 150, 175)
    layers = [
        (_rect(0, 0, length, width), body),
        (_rect(length * 0.16, 0, length * 0.14, width - 1.2), glass),  # windscreen (x points forward)
        (_rect(-length * 0.3, 0, length * 0.1, width - 1.6), glass),  # rear window
    ]
    return _sprite(layers, angle)


def _plane(rng, s: float, angle: float):
    length = max(12, rng.uniform(22, 38) * s)
    span, fw = length * rng.uniform(0.85, 1.05), length * 0.12
    body = (228, 230, 234) if rng.random() < 0.7 else (196, 200, 206)
    wing = _shade(body, 0.86)
    layers = []
    for side in (1, -1):
        layers.append(([(0.12 * length, side * fw / 2), (-0.1 * length, side * span / 2),
                        (-0.2 * length, side * span / 2), (-0.1 * length, side * fw / 2)], wing))  # fmt: skip
        layers.append(([(-0.36 * length, side * fw / 2), (-0.47 * length, side * span * 0.2),
                        (-0.52 * length, side * span * 0.2), (-0.47 * length, side * fw / 2)], wing))  # fmt: skip
    nose = length / 2 - fw
    layers.append(([(length / 2, 0), (nose, fw / 2), (-length / 2, fw * 0.35), (-length / 2, -fw * 0.35),
                    (nose, -fw / 2)], body))  # fmt: skip
    return _sprite(layers, angle)


def _ship(rng, s: float, angle: float):
    length = max(10, rng.uniform(16, 32) * s)
    width = max(4, length * rng.uniform(0.22, 0.3))
    hull = [(200, 62, 50), (62, 62, 72), (232, 232, 226), (120, 124, 130)][rng.integers(4)]
    deck = _shade(hull, 1.25) if sum(hull) < 450 else (170, 170, 165)
    bow = length / 2 - width

    def outline(k):
        return [(length / 2 * k, 0), (bow * k, width / 2 * k), (-length / 2 * k, width / 2 * k),
                (-length / 2 * k, -width / 2 * k), (bow * k, -width / 2 * k)]  # fmt: skip

    layers = [(outline(1.0), hull), (outline(0.72), deck),
              (_rect(-length * 0.26, 0, length * 0.18, width * 0.55), (244, 244, 240))]  # fmt: skip
    return _sprite(layers, angle)


def _storage_tank(rng, s: float, angle: float):
    r = max(4, rng.uniform(5, 13) * s)
    layers = [(_circle(0, 0, r), (105, 106, 108)), (_circle(0, 0, r - max(1.2, r * 0.2)), (218, 218, 212)),
              (_circle(0, 0, max(0.8, r * 0.16)), (160, 160, 160))]  # fmt: skip
    return _sprite(layers, angle)


def _tennis_court(rng, s: float, angle: float):
    length = max(14, rng.uniform(22, 28) * s)
    width = length * 0.52
    surface = [(68, 128, 82), (58, 98, 160), (182, 92, 62)][rng.integers(3)]
    line = (245, 245, 245)
    layers = [(_rect(0, 0, length, width), _shade(surface, 0.85)),
              (_rect(0, 0, length * 0.8, width * 0.72), line),
              (_rect(0, 0, length * 0.8 - 2, width * 0.72 - 2), surface),
              (_rect(0, 0, 1, width * 0.72), line)]  # fmt: skip
    return _sprite(layers, angle)


def _swimming_pool(rng, s: float, angle: float):
    length = max(6, rng.uniform(8, 16) * s)
    width = max(4, length * rng.uniform(0.5, 0.8))
    layers = [(_rect(0, 0, length, width), (224, 222, 210)), (_rect(0, 0, length - 2, width - 2), (42, 172, 222))]
    return _sprite(layers, angle)


def _tree(rng, s: float, angle: float):
    r = max(2.5, rng.uniform(3, 6.5) * s)
    wobble = [(0.12, 3, rng.uniform(0, 6.3)), (0.08, 5, rng.uniform(0, 6.3))]
    dark = (30 + int(rng.integers(15)), 74 + int(rng.integers(20)), 32)
    layers = [(_circle(0, 0, r, wobble), dark), (_circle(-r * 0.25, -r * 0.25, r * 0.45), _shade(dark, 1.45))]
    return _sprite(layers, angle)


SPRITES = {"building": _building, "vehicle": _vehicle, "plane": _plane, "ship": _ship,
           "storage tank": _storage_tank, "tennis court": _tennis_court, "swimming pool": _swimming_pool,
           "tree": _tree}  # fmt: skip


# ---------------------------------------------------------------------------------------------- terrain


def _lowfreq(rng, size: int, cells: int) -> np.ndarray:
    """Smooth noise in about -1..1, `cells` bumps across the image."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR)) * 0.7


TERRAIN_COLORS = {"grass": (98, 136, 66), "desert": (204, 182, 140), "urban": (134, 134, 130)}
CROPS = [(112, 142, 62), (166, 154, 92), (126, 104, 74), (88, 122, 52), (182, 170, 112), (140, 130, 70)]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates: yy as a column and xx as a row, which broadcast to (size, size)."""
    axis = np.arange(size, dtype=np.float32)
    return axis[:, None], axis[None, :]


def _terrain(rng, terrain: str, size: int, s: float) -> np.ndarray:
    image = np.empty((size, size, 3), np.float32)
    yy, xx = _grid(size)
    if terrain == "farmland":
        fields = [(0, 0, size, size)]
        done = []
        while fields:
            x0, y0, x1, y1 = fields.pop()
            w, h = x1 - x0, y1 - y0
            if max(w, h) < 70 * s or (max(w, h) < 140 * s and rng.random() < 0.3):
                done.append((x0, y0, x1, y1))
                continue
            if w >= h:
                cut = int(x0 + w * rng.uniform(0.3, 0.7))
                fields += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
            else:
                cut = int(y0 + h * rng.uniform(0.3, 0.7))
                fields += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
        for x0, y0, x1, y1 in done:
            color = np.array(CROPS[rng.integers(len(CROPS))], np.float32)
            theta, period = rng.uniform(0, math.pi), rng.uniform(3, 6) * max(s, 0.5)
            along = xx[:, x0:x1] * math.cos(theta) + yy[y0:y1, :] * math.sin(theta)
            image[y0:y1, x0:x1] = color + (6 * np.sin(along * (2 * math.pi / period)))[..., None]
            image[y0:y1, x0] = color * 0.7  # hedgerows between fields
            image[y0, x0:x1] = color * 0.7
        image += _lowfreq(rng, size, 4)[..., None] * 8
    else:
        base = np.array(TERRAIN_COLORS[terrain], np.float32) * rng.uniform(0.92, 1.08)
        image[:] = base
        if terrain == "urban":  # pavement blocks of slightly different grey
            for _ in range(int(rng.integers(4, 9))):
                x0, y0 = (int(v) for v in rng.integers(0, size, 2))
                w, h = (int(v) for v in rng.integers(int(30 * s) + 1, int(110 * s) + 2, 2))
                image[y0 : y0 + h, x0 : x0 + w] += rng.uniform(-9, 9)
            image += _lowfreq(rng, size, 6)[..., None] * 6
        elif terrain == "desert":  # dunes: faint ripples over broad shading
            theta = rng.uniform(0, math.pi)
            along = xx * math.cos(theta) + yy * math.sin(theta)
            image += (4 * np.sin(along * (2 * math.pi / (14 * max(s, 0.5)))))[..., None]
            image += _lowfreq(rng, size, 3)[..., None] * 14
        else:
            image += _lowfreq(rng, size, 5)[..., None] * np.array([10, 14, 8], np.float32)
    return image


class _Layout:
    """The background and where things may go: water, roads, airfield apron and parking lot masks."""

    def __init__(self, rng, size: int, terrain: str):
        s = size / REFERENCE_SIZE
        self.size, self.s, self.terrain = size, s, terrain
        self.image = _terrain(rng, terrain, size, s)
        yy, xx = _grid(size)
        zero = np.zeros((size, size), bool)
        self.water, self.road, self.apron, self.lot = zero, zero.copy(), zero.copy(), zero.copy()
        self.features: list[str] = []
        self.roads: list[tuple[float, float, float, float]] = []  # (x, y, angle, width)
        self.river: tuple | None = None
        self.apron_box = self.lot_box = None
        self.water_points: np.ndarray | None = None

        airfield = rng.random() < {"desert": 0.4, "grass": 0.3, "farmland": 0.12, "urban": 0.1}[terrain]
        water = None if airfield else ("river", "lake", None)[int(rng.choice(3, p=[0.25, 0.2, 0.55]))]
        if water == "river":
            self._river(rng, xx, yy)
        elif water == "lake":
            self._lake(rng, xx, yy)
        road_count = rng.choice(3, p=[0.05, 0.55, 0.4] if terrain == "urban" else [0.35, 0.45, 0.2])
        for _ in range(int(road_count)):
            self._road(rng, xx, yy)
        if airfield:
            self._airfield(rng)
        if terrain == "urban" and rng.random() < 0.35 or terrain != "urban" and self.roads and rng.random() < 0.12:
            self._parking_lot(rng)
        if self.roads:
            self.features.append("road" if len(self.roads) == 1 else "roads")
        self.ground = ~(self.water | self.road | self.apron | self.lot)

    def _paint(self, mask, color) -> None:
        self.image[mask] = color

    def _river(self, rng, xx, yy) -> None:
        size, s = self.size, self.s
        angle = rng.uniform(0, math.pi)
        width = rng.uniform(20, 36) * s
        amp, wave, phase = rng.uniform(4, 22) * s, rng.uniform(120, 260) * s, rng.uniform(0, 2 * math.pi)
        c, sn = math.cos(angle), math.sin(angle)
        middle = -size / 2 * sn + size / 2 * c + rng.uniform(-0.2, 0.2) * size
        u, v = xx * c + yy * sn, -xx * sn + yy * c
        off = np.abs(v - (middle + amp * np.sin(u * (2 * math.pi / wave) + phase)))
        self.river = (angle, middle, amp, wave, phase, width)
        self.water = off < width / 2
        self._paint((off < width / 2 + 2.5 * s + 1) & ~self.water, (176, 164, 124))
        self._water_color(rng)
        self.features.append("river")

    def _lake(self, rng, xx, yy) -> None:
        size = self.size
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        radius = rng.uniform(0.16, 0.3) * size
        theta = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + 0.15 * np.sin(2 * theta + rng.uniform(0, 6.3)) + 0.1 * np.sin(3 * theta + rng.uniform(0, 6.3))
        dist = np.hypot(xx - cx, yy - cy) / wobble
        self.water = dist < radius
        self._paint((dist < radius + 2.5 * self.s + 1) & ~self.water, (176, 164, 124))
        self._water_color(rng)
        self.features.append("lake")

    def _water_color(self, rng) -> None:
        color = np.array([(38, 78, 108), (30, 72, 92), (44, 88, 96)][rng.integers(3)], np.float32)
        shade = _lowfreq(rng, self.size, 4)[self.water][:, None] * 6
        self.image[self.water] = color + shade

    def _road(self, rng, xx, yy) -> None:
        size, s = self.size, self.s
        if self.terrain == "urban" or rng.random() < 0.3:
            taken = {round(a, 3) for _, _, a, _ in self.roads}
            angle = 0.0 if 0.0 not in taken and (math.pi / 2 in taken or rng.random() < 0.5) else math.pi / 2
        else:
            angle = rng.uniform(0, math.pi)
        x, y = rng.uniform(0.2, 0.8, 2) * size
        width = rng.uniform(11, 16) * s
        c, sn = math.cos(angle), math.sin(angle)
        across = np.abs(-(xx - x) * sn + (yy - y) * c)
        along = (xx - x) * c + (yy - y) * sn
        road = across < width / 2
        self.road |= road
        self.water &= ~road  # a bridge
        self._paint(road, (84, 84, 88))
        self._paint(road & (across >= width / 2 - 1), (150, 150, 148))
        dash = 6 * max(s, 0.5)
        self._paint((across < 0.7) & (np.mod(along, 2 * dash) < dash), (232, 226, 170))
        self.roads.append((x, y, angle, width))

    def _airfield(self, rng) -> None:
        size = self.size
        w, h = (rng.uniform(0.5, 0.8, 2) * size).astype(int)
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        apron = np.zeros((size, size), bool)
        apron[y0 : y0 + h, x0 : x0 + w] = True
        self._paint(apron, (176, 176, 170))
        seam = max(8, int(24 * self.s))
        self.image[y0 : y0 + h, x0 : x0 + w : seam] *= 0.92
        self.image[y0 : y0 + h : seam, x0 : x0 + w] *= 0.92
        self.road &= ~apron
        self.water &= ~apron
        self.apron, self.apron_box = apron, (x0, y0, x0 + w, y0 + h)
        self.features.append("airfield")

    def _parking_lot(self, rng) -> None:
        size, s = self.size, self.s
        stall = max(6, int(round(8 * s)))
        rows_h = max(7, int(round(12 * s)))
        n = min(int(rng.integers(5, 12)), (int(size * 0.8) - 2) // stall)
        w, h = n * stall + 2, 2 * rows_h + max(4, int(6 * s))
        for _ in range(20):
            x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if not (self.water[y0 : y0 + h, x0 : x0 + w].any() or self.apron[y0 : y0 + h, x0 : x0 + w].any()):
                break
        else:
            return
        lot = np.zeros((size, size), bool)
        lot[y0 : y0 + h, x0 : x0 + w] = True
        self._paint(lot, (96, 96, 100))
        for k in range(n + 1):
            x = x0 + 1 + k * stall
            self.image[y0 + 1 : y0 + rows_h, x] = (214, 214, 210)
            self.image[y0 + h - rows_h : y0 + h - 1, x] = (214, 214, 210)
        self.road &= ~lot
        self.lot, self.lot_box = lot, (x0, y0, stall, rows_h, n, h)
        self.features.append("parking lot")


# ---------------------------------------------------------------------------------------------- placing


def _presence(terrain: str, layout: _Layout) -> dict[str, float]:
    urban, open_ground = terrain == "urban", terrain in ("desert", "grass")
    return {
        "building": {"urban": 0.95, "farmland": 0.55, "grass": 0.5, "desert": 0.3}[terrain],
        "vehicle": 0.8 if layout.roads or layout.lot_box else 0.15,
        "plane": 0.95 if layout.apron_box else (0.15 if open_ground else 0.0),
        "ship": 0.8 if layout.water.any() else 0.0,
        "storage tank": 0.45 if terrain == "desert" else 0.3,
        "tennis court": 0.3 if urban else (0.12 if terrain == "grass" else 0.04),
        "swimming pool": 0.35 if urban else (0.12 if terrain == "grass" else 0.04),
        "tree": {"grass": 0.6, "farmland": 0.4, "urban": 0.4, "desert": 0.05}[terrain],
    }


class _Placer:
    def __init__(self, rng, layout: _Layout, image: np.ndarray):
        self.rng, self.layout, self.image = rng, layout, image
        size = layout.size
        self.mask = np.zeros((size, size), np.int16)
        self.taken = np.zeros((size, size), bool)  # boxes of placed objects grown by GAP
        self.objects: list[dict] = []
        self.where: list[str] = []

    def fits(self, mask: np.ndarray, x: int, y: int, allowed: np.ndarray) -> bool:
        h, w = mask.shape
        size = self.layout.size
        if x < 0 or y < 0 or x + w > size or y + h > size:
            return False
        if self.taken[y : y + h, x : x + w].any():
            return False
        return bool(allowed[y : y + h, x : x + w][mask].all())

    def put(self, name: str, rgb: np.ndarray, mask: np.ndarray, x: int, y: int, where: str) -> None:
        h, w = mask.shape
        noise = self.rng.integers(-4, 5, (int(mask.sum()), 1))
        self.image[y : y + h, x : x + w][mask] = np.clip(rgb[mask].astype(np.int16) + noise, 0, 255)
        self.mask[y : y + h, x : x + w][mask] = len(self.objects) + 1
        self.taken[max(0, y - GAP) : y + h + GAP, max(0, x - GAP) : x + w + GAP] = True
        self.objects.append({"name": name, "box": [float(x), float(y), float(x + w), float(y + h)]})
        self.where.append(where)

    def place(self, name: str, attempts: int = 40) -> bool:
        """Try to place one object of class `name`; False when no spot was found."""
        rng, s = self.rng, self.layout.s
        sprite = SPRITES[name]
        fixed = None  # a sprite drawn once and moved around, for classes whose angle does not depend on the spot
        for _ in range(attempts):
            spot = self._spot(name)
            if spot is None:
                return False
            cx, cy, angle, allowed, where = spot
            if angle is None:
                if fixed is None:
                    fixed = sprite(rng, s, self._free_angle(name))
                rgb, mask = fixed
            else:
                rgb, mask = sprite(rng, s, angle)
            h, w = mask.shape
            x, y = int(round(cx - w / 2)), int(round(cy - h / 2))
            if self.fits(mask, x, y, allowed):
                self.put(name, rgb, mask, x, y, where)
                return True
        return False

    def _free_angle(self, name: str) -> float:
        rng = self.rng
        if name in ("building", "tennis court", "swimming pool"):
            return 0.0 if rng.random() < 0.5 else math.pi / 2
        if name == "vehicle":  # on open ground: parked in some direction
            return float(rng.integers(4)) * math.pi / 2
        return rng.uniform(0, 2 * math.pi)

    def _spot(self, name: str):
        """(cx, cy, angle or None, allowed mask, where) for one attempt."""
        rng, layout = self.rng, self.layout
        size = layout.size
        anywhere = rng.uniform(0, size, 2)
        if name == "ship":
            if layout.river is not None:
                angle, middle, amp, wave, phase, _ = layout.river
                u = rng.uniform(-size, 2 * size)
                v = middle + amp * math.sin(u * 2 * math.pi / wave + phase)
                slope = math.atan(amp * 2 * math.pi / wave * math.cos(u * 2 * math.pi / wave + phase))
                c, sn = math.cos(angle), math.sin(angle)
                heading = angle + slope + (math.pi if rng.random() < 0.5 else 0.0)
                return u * c - v * sn, u * sn + v * c, heading, layout.water, "river"
            if layout.water_points is None:
                layout.water_points = np.argwhere(layout.water)
            cy, cx = layout.water_points[int(rng.integers(len(layout.water_points)))]
            return cx + 0.5, cy + 0.5, None, layout.water, "lake"
        if name == "plane":
            if layout.apron_box is not None:
                x0, y0, x1, y1 = layout.apron_box
                return rng.uniform(x0, x1), rng.uniform(y0, y1), None, layout.apron, "airfield"
            return *anywhere, None, layout.ground, "ground"
        if name == "vehicle":
            if layout.lot_box is not None and (not layout.roads or rng.random() < 0.5):
                x0, y0, stall, rows_h, n, h = layout.lot_box
                k, top = int(rng.integers(n)), rng.random() < 0.5
                cy = y0 + rows_h / 2 + 0.5 if top else y0 + h - rows_h / 2 - 0.5
                return x0 + 1 + (k + 0.5) * stall, cy, math.pi / 2, layout.lot, "parking lot"
            if layout.roads:
                x, y, angle, width = layout.roads[int(rng.integers(len(layout.roads)))]
                t, lane = rng.uniform(-size, size), (1 if rng.random() < 0.5 else -1)
                c, sn = math.cos(angle), math.sin(angle)
                px, py = x + t * c - lane * width / 4 * sn, y + t * sn + lane * width / 4 * c
                return px, py, angle + (math.pi if lane < 0 else 0.0), layout.road, "road"
            return *anywhere, None, layout.ground, "ground"
        if name == "storage tank" and self.where and rng.random() < 0.7:
            tanks = [o["box"] for o in self.objects if o["name"] == name]
            if tanks:  # next to a tank already placed: tank farms come in rows
                x1, y1, x2, y2 = tanks[int(rng.integers(len(tanks)))]
                step = (1 if rng.random() < 0.5 else -1) * (x2 - x1 + GAP + 1 + int(rng.integers(0, 3)))
                dx, dy = (step, 0) if rng.random() < 0.5 else (0, step)
                return (x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy, None, layout.ground, "ground"
        return *anywhere, None, layout.ground, "ground"


# ---------------------------------------------------------------------------------------------- captions


def plural(name: str) -> str:
    return name + "s"


def count_words(name: str, n: int, rng) -> str:
    """The count of a class in words: 'a plane' or 'one plane' for 1, else 'three planes'."""
    if n == 1:
        article = "an" if name[0] in "aeiou" else "a"
        return f"{article if rng.random() < 0.7 else 'one'} {name}"
    return f"{NUMBER_WORDS[n]} {plural(name)}"


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


TERRAIN_PHRASES = {
    "grass": ["a grassy area", "green grassland", "open meadows"],
    "farmland": ["farmland", "patchwork farm fields", "cultivated fields"],
    "desert": ["desert", "a sandy desert", "bare sandy ground"],
    "urban": ["an urban area", "a city district", "a built-up area"],
}
TERRAIN_SENTENCES = {
    "grass": ["the ground is covered with green grass.", "most of the scene is open grassland."],
    "farmland": ["fields of different crops form a patchwork.", "ploughed fields cover most of the scene."],
    "desert": ["the terrain is dry and sandy.", "the ground is bare sand with faint dunes."],
    "urban": ["paved surfaces cover most of the ground.", "the ground is paved like a city block."],
}
OPENERS = ["an aerial view of", "a satellite image of", "a top-down view of", "an overhead image of"]
FEATURE_NOUNS = {"road": "a road", "roads": "two roads", "river": "a river", "lake": "a lake",
                 "airfield": "an airfield", "parking lot": "a parking lot"}  # fmt: skip
FEATURE_SENTENCES = {
    "road": "a road crosses the image.",
    "roads": "two roads cross the image.",
    "river": "a river winds through the scene.",
    "lake": "a lake lies in the scene.",
    "airfield": "part of an airfield apron is visible.",
    "parking lot": "there is a parking lot with marked stalls.",
}


def _near(mask: np.ndarray, box, margin: int) -> bool:
    x1, y1, x2, y2 = (int(v) for v in box)
    return bool(mask[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin].any())


def _class_sentence(name: str, n: int, wheres: set[str], layout: _Layout, boxes, rng) -> str:
    phrase = count_words(name, n, rng)
    be = "is" if n == 1 else "are"
    margin = int(20 * layout.s) + 1
    water = "river" if "river" in layout.features else "lake"
    road = "road" if len(layout.roads) == 1 else "roads"
    place = {"grass": "grassland", "farmland": "fields", "desert": "desert", "urban": "area"}[layout.terrain]
    where = next(iter(wheres)) if len(wheres) == 1 else None
    if name == "vehicle" and where == "road":
        return f"{phrase} {be} driving on the {road}."
    if name == "vehicle" and where == "parking lot":
        return f"{phrase} {be} parked in the parking lot."
    if name == "plane" and where == "airfield":
        return f"{phrase} {be} parked on the airfield."
    if name == "plane":
        return f"{phrase} {'sits' if n == 1 else 'sit'} on bare ground."
    if name == "ship":
        return f"{phrase} {be} sailing on the {water}."
    if name in ("storage tank", "building") and layout.water.any() and all(_near(layout.water, b, margin)
                                                                         for b in boxes):  # fmt: skip
        return f"{phrase} {'stands' if n == 1 else 'stand'} near the {water}."
    if name in ("storage tank", "building", "tree") and layout.roads and all(_near(layout.road, b, margin)
                                                                           for b in boxes):  # fmt: skip
        return f"{phrase} {be} located along the {road}."
    if name == "building" and n > 1:
        return f"{phrase} are scattered across the {place}."
    if name == "tree":
        return f"{phrase} {'grows' if n == 1 else 'grow'} in the {place}."
    return _pick(rng, [f"there {be} {phrase} in the image.", f"{phrase} {be} visible."])


def _captions(rng, layout: _Layout, objects: list[dict], wheres: list[str]) -> list[str]:
    counts = Counter(o["name"] for o in objects)
    order = sorted(counts, key=lambda name: (-counts[name], CLASSES.index(name)))
    terrain = _pick(rng, TERRAIN_PHRASES[layout.terrain])
    extras = [FEATURE_NOUNS[f] for f in layout.features]
    if order and rng.random() < 0.7:
        extras += [count_words(name, counts[name], rng) for name in order[: int(rng.integers(1, 3))]]
    overview = f"{_pick(rng, OPENERS)} {terrain}" + (f" with {_join(extras)}." if extras else ".")
    candidates = [_pick(rng, TERRAIN_SENTENCES[layout.terrain])]
    candidates += [FEATURE_SENTENCES[f] for f in layout.features]
    if order:
        verb = _pick(rng, ["the image contains", "the scene contains", "this image shows"])
        candidates.append(f"{verb} {_join([count_words(name, counts[name], rng) for name in order])}.")
        for name in order:
            boxes = [o["box"] for o in objects if o["name"] == name]
            places = {w for o, w in zip(objects, wheres, strict=True) if o["name"] == name}
            candidates.append(_class_sentence(name, counts[name], places, layout, boxes, rng))
    candidates = [c for c in dict.fromkeys(candidates) if c != overview]
    chosen = rng.permutation(len(candidates))[: int(rng.integers(1, 5))]
    return [overview] + [candidates[i] for i in sorted(chosen)]


# ---------------------------------------------------------------------------------------------- scenes


def draw_scene(seed: int, size: int = 256) -> Scene:
    """Render scene `seed` with its layers (background, object mask); see the module docstring."""
    if size < 64:
        raise ValueError(f"synthetic scenes need size >= 64 pixels, got {size}")
    rng = np.random.default_rng(seed)
    terrain = TERRAINS[int(rng.choice(4, p=[0.28, 0.28, 0.2, 0.24]))]
    layout = _Layout(rng, size, terrain)
    noise = rng.integers(-5, 6, (size, size, 3), dtype=np.int8)  # mild uniform sensor noise
    background = np.clip(layout.image + noise, 0, 255).astype(np.uint8)
    image = background.copy()
    placer = _Placer(rng, layout, image)
    presence = _presence(terrain, layout)
    targets = {name: (int(rng.choice(6, p=_COUNT_P)) + 1 if rng.random() < presence[name] else 0)
               for name in CLASSES}  # fmt: skip
    if not any(targets.values()):
        targets["building" if terrain == "urban" else "tree"] = 1
    for name in ("ship", "plane", "storage tank", "tennis court", "building", "swimming pool", "vehicle", "tree"):
        for _ in range(targets[name]):
            placer.place(name)
    captions = _captions(rng, layout, placer.objects, placer.where)
    return Scene(seed, size, terrain, list(layout.features), image, background, placer.mask, placer.objects,
                 captions)  # fmt: skip


def render_scene(seed: int, size: int = 256) -> tuple[Image.Image, list[dict], list[str]]:
    """Scene `seed` as (RGB image, objects [{"name", "box": [x1, y1, x2, y2]}], captions)."""
    scene = draw_scene(seed, size)
    return Image.fromarray(scene.image), scene.objects, scene.captions


def _same_pixels(path: Path, pixels: np.ndarray) -> bool:
    """Whether `path` already holds exactly these pixels (decoding is faster than encoding a PNG again)."""
    if not path.is_file():
        return False
    try:
        with Image.open(path) as image:
            return image.mode == "RGB" and np.array_equal(np.asarray(image), pixels)
    except (OSError, ValueError, SyntaxError):
        return False


def rendered_images(out: Path) -> list[Path]:
    """The scene images `synth_examples` writes under `out` (`images/{split}-NNNNNN.png`)."""
    return sorted((Path(out) / "images").glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].png"))


def synth_examples(n: int, out: Path, root: Path, seed: int = 0, size: int = 256,
                   split: str = "train") -> Iterator[Example]:  # fmt: skip
    """Render scenes seed..seed+n-1 to `out/images/{split}-{i:06d}.png` and yield them as "regions" examples."""
    out, root = Path(out), Path(root)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        scene = draw_scene(seed + i, size)
        path = folder / f"{split}-{i:06d}.png"
        if not _same_pixels(path, scene.image):
            Image.fromarray(scene.image).save(path, compress_level=1)
        try:
            relative = path.relative_to(root)
        except ValueError:
            relative = path.resolve().relative_to(root.resolve())
        yield Example(
            source="synthetic", split=split, key=f"{i:06d}", kind="regions", images=[relative.as_posix()],
            image_size=(size, size), fields={"objects": scene.objects, "captions": scene.captions},
            meta={"seed": seed + i, "terrain": scene.terrain, "features": scene.features},
        )  # fmt: skip
