"""Helpers of the map tests: GeoTIFFs written in the test, and a stand-in model that answers from the pixels."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import rasterio
from rasterio.transform import Affine

from skyeye.boxes import format_box, pixel_to_grid

UTM = "EPSG:32633"
UTM_TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
BRIGHT = 150  # 8-bit values from here up are objects to the stand-in model


def write_raster(path: Path, bands: np.ndarray, transform=UTM_TRANSFORM, crs=UTM, descriptions=None,
                 **profile) -> Path:  # fmt: skip
    """A GeoTIFF of `bands` [count, height, width]."""
    count, height, width = bands.shape
    georef = {} if crs is None else {"crs": crs, "transform": transform}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                           dtype=bands.dtype, **georef, **profile) as dataset:  # fmt: skip
            dataset.write(bands)
            for band, description in enumerate(descriptions or [], 1):
                dataset.set_band_description(band, description)
    return path


def paint(bands: np.ndarray, objects: dict[int, tuple[int, int, int, int]], band: int = 0) -> np.ndarray:
    """Draw each object (value: x1, y1, x2, y2 in pixels, end exclusive) into `band` of `bands`."""
    for value, (x1, y1, x2, y2) in objects.items():
        bands[band, y1:y2, x1:x2] = value
    return bands


class StandInModel:
    """Stands in for SkyEye: sees each distinct bright value of a tile's red channel as one object.

    Box tasks answer `<p>LABEL</p> {box}<delim>{box}` with every object's bounding box on the 0-100 grid (exact
    in pixels for 100-pixel tiles); other tasks answer how many objects the tile shows. `fail_after` batches
    it raises, as a killed run stops. It records every image it was shown.
    """

    def __init__(self, label: str = "tank", fail_after: int | None = None) -> None:
        self.label = label
        self.fail_after = fail_after
        self.seen: list = []
        self.batches = 0
        self.cfg = SimpleNamespace(name="stand-in")

    def ask_many(self, images, texts, tasks=None, batch_size=8, **generation):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt("the stand-in model was killed")
        self.batches += 1
        self.seen += images
        return [SimpleNamespace(text=self.answer(image, task)) for image, task in zip(images, tasks, strict=True)]

    def answer(self, loaded, task: str) -> str:
        red = np.asarray(loaded.image)[..., 0]
        height, width = red.shape
        boxes = []
        for value in sorted(set(np.unique(red)) - set(range(BRIGHT))):
            ys, xs = np.nonzero(red == value)
            boxes.append(pixel_to_grid((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), width, height))
        if task in ("detection", "refer", "grounding"):
            return f"<p>{self.label}</p> " + "<delim>".join(format_box(b) for b in boxes) if boxes else "none"
        return f"{len(boxes)} objects"
