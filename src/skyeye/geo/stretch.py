"""One 8-bit stretch per scene, so that every tile of a scene looks alike.

Per-tile stretching would turn a calm sea tile into noise and make neighbouring tiles disagree. Instead:

- uint8 bands are kept as is (as `skyeye ask` does), unless a fixed range is given;
- by default each band's 2nd-98th percentile is computed once for the whole scene, with nodata, masked and
  non-finite values left out, from about a million pixels: a scene up to `SAMPLE_SIDE` pixels on its long
  side is read whole; a larger one is read decimated to that size from its overviews when it has them, else
  as a 16 x 16 grid of 64-pixel windows spread evenly over it (reading every block of a huge scene without
  overviews would take as long as mapping it);
- `--stretch LO,HI` maps LO..HI to 0..255 for every band instead (e.g. `0,3000` for Sentinel-2 L2A
  reflectance); values outside are clipped.

Nodata is shown black in every tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from skyeye.geo.bands import BandChoice
from skyeye.geo.scene import Scene
from skyeye.geotiff import BandRange, percentile_range, render_rgb, valid_values

SAMPLE_SIDE = 1024
SAMPLE_WINDOWS = 16  # per axis
SAMPLE_WINDOW_SIDE = 64


@dataclass(frozen=True)
class SceneStretch:
    ranges: tuple[BandRange, ...]  # one per chosen band
    how: str  # one line for people

    def render(self, values: np.ndarray, valid: np.ndarray) -> Image.Image:
        """A tile's chosen bands [bands, height, width] as an RGB image."""
        return render_rgb(values, np.broadcast_to(valid, values.shape), self.ranges)


def parse_stretch(text: str | None) -> tuple[float, float] | None:
    """`LO,HI` -> (LO, HI); None or empty -> None (percentiles of the scene)."""
    if text is None or not text.strip():
        return None
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--stretch {text!r}: give the range as LO,HI, e.g. 0,3000") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"--stretch {text!r}: LO must be below HI and both finite")
    return lo, hi


def scene_stretch(scene: Scene, bands: BandChoice, fixed: tuple[float, float] | None = None) -> SceneStretch:
    """The stretch of `bands` of `scene`: a fixed range, uint8 kept, or percentiles of a decimated read."""
    if fixed is not None:
        lo, hi = fixed
        return SceneStretch(tuple(BandRange("fixed", lo, hi) for _ in bands.numbers), f"stretched {lo:g}–{hi:g}")
    dtypes = {scene.bands[n - 1].dtype for n in bands.numbers}
    if dtypes == {"uint8"}:
        return SceneStretch(tuple(BandRange("uint8") for _ in bands.numbers), "8-bit kept as is")
    values, valid = _sample(scene, bands.numbers)
    ranges = tuple(percentile_range(v, valid_values(v, valid)) for v in values)
    per_band = ", ".join(_range_text(label, r) for label, r in zip(bands.labels, ranges, strict=True))
    how = f"stretched 2–98 percentile of the whole scene ({per_band})"
    if any(r.method == "empty" for r in ranges):
        how += "; no valid pixel in the scene sample for some band: give --stretch LO,HI"
    return SceneStretch(ranges, how)


def _sample(scene: Scene, numbers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Values [bands, pixels] and validity [pixels] of about SAMPLE_SIDE² pixels spread over the scene."""
    from rasterio.windows import Window

    if max(scene.width, scene.height) <= SAMPLE_SIDE or scene.has_overviews:
        factor = max(1.0, max(scene.width, scene.height) / SAMPLE_SIDE)
        shape = (max(1, round(scene.height / factor)), max(1, round(scene.width / factor)))
        values, valid = scene.read(numbers, Window(0, 0, scene.width, scene.height), out_shape=shape)
        return values.reshape(len(numbers), -1), valid.reshape(-1)
    side_x, side_y = min(SAMPLE_WINDOW_SIDE, scene.width), min(SAMPLE_WINDOW_SIDE, scene.height)
    xs = np.linspace(0, scene.width - side_x, SAMPLE_WINDOWS).round().astype(int)
    ys = np.linspace(0, scene.height - side_y, SAMPLE_WINDOWS).round().astype(int)
    reads = [scene.read(numbers, Window(int(x), int(y), side_x, side_y)) for y in ys for x in xs]
    values = np.concatenate([v.reshape(len(numbers), -1) for v, _ in reads], axis=1)
    return values, np.concatenate([m.reshape(-1) for _, m in reads])


def _range_text(label: str, band: BandRange) -> str:
    if band.method in ("percentile", "min-max"):
        return f"{label} {band.lo:g}–{band.hi:g}" + (" min-max" if band.method == "min-max" else "")
    return f"{label} {band.method}"
