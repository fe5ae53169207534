"""Multi-band rasters (GeoTIFF, JPEG 2000) read with rasterio and rendered to 8-bit RGB.

PIL (`skyeye.images`) reads ordinary images and single-band rasters. A raster with two or more bands is read
here with rasterio (GDAL) instead, unless it is 8-bit with colour interpretation red, green, blue (+ alpha),
which PIL renders as well. Files considered: .tif, .tiff and .jp2 (any case); `needs_rasterio` tells which.

Three bands are shown as red, green, blue, chosen by the first rule that finds all three:

1. the bands whose colour interpretation (GDAL ``colorinterp``) is red, green, blue;
2. the bands whose descriptions name red, green, blue as a word ("B4 red", not "infrared" or "red edge");
3. the bands named as Sentinel-2 names them: B04, B03, B02 (the whole description, any case);
4. the first three bands that are not alpha.

With fewer than three non-alpha bands, the first band is shown as grayscale. uint8 bands are kept as is; other
bands are each stretched to 0-255 by the 2nd-98th percentile of their valid values (`stretch_to_8bit`).
Nodata -- the dataset's nodata value, or pixels masked by its mask or alpha band -- is left out of the
percentiles and shown black; so are NaN and inf.

The pieces are public for whole scenes (`skyeye.geo`), which choose bands the same way (`choose_rgb_bands`)
but take one `BandRange` per band for the whole scene and apply it to every tile (`render_rgb`).

rasterio is imported only when a raster file is actually opened.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")

_COLOURS = ("red", "green", "blue")
# Case-insensitive word match: "infrared" (NIR, SWIR) and Sentinel-2's "red edge" bands are not red.
_DESCRIBES = {colour: re.compile(rf"(?<![a-z]){colour}(?![a-z])(?![\s_-]*edge)", re.IGNORECASE) for colour in _COLOURS}

# Sentinel-2's zero-padded names only: Landsat's "B4" is red on Landsat 8-9 but near infrared on Landsat 5-7.
_SENTINEL2_NAMES = {"red": "B04", "green": "B03", "blue": "B02"}

_BAND_RENDERINGS = {
    "uint8": "kept as is",
    "percentile": "stretched 2–98 percentile to 8-bit",
    "fixed": "stretched over a fixed range to 8-bit",
    "min-max": "stretched min–max to 8-bit",
    "constant": "rendered mid-gray (constant)",
    "empty": "rendered black (no valid values)",
}


class RasterError(ValueError):
    """A raster that cannot be used; the message names the file and says what is wrong."""


class RenderedRaster(NamedTuple):
    """A raster rendered to RGB, with what `skyeye.images.LoadedImage` says about its source."""

    image: Image.Image
    size: tuple[int, int]
    mode: str
    rendering: str


class BandRange(NamedTuple):
    """How one band's values become 8-bit: `method` is a key of `_BAND_RENDERINGS`; `lo`..`hi` maps to 0..255."""

    method: str
    lo: float = 0.0
    hi: float = 0.0


def percentile_range(values: np.ndarray, valid: np.ndarray) -> BandRange:
    """The 2nd-98th percentile of `values` where `valid` is true (which must exclude NaN and inf).

    "min-max" when the two percentiles coincide; "constant" when every valid value is the same; "empty" when
    no value is valid.
    """
    # float32 halves the memory of float64 and is ample precision for choosing a display range.
    kept = values[valid].astype(np.float32)
    if kept.size == 0:
        return BandRange("empty")
    lo, hi = np.percentile(kept, [2, 98])
    method = "percentile"
    if hi <= lo:
        # Mostly constant bands with a few outliers: the outliers are the only content there is.
        lo, hi = kept.min(), kept.max()
        method = "min-max"
    return BandRange("constant" if hi <= lo else method, float(lo), float(hi))


def apply_range(values: np.ndarray, valid: np.ndarray, band: BandRange) -> np.ndarray:
    """`values` as uint8 by `band`: invalid pixels 0, "uint8" kept, "constant" mid-gray, "empty" black."""
    out = np.zeros(values.shape, dtype=np.uint8)
    if band.method == "uint8":
        out[valid] = values[valid]
    elif band.method == "constant":
        out[valid] = 128
    elif band.method != "empty":
        kept = values[valid].astype(np.float32)
        scale = 255.0 / (band.hi - band.lo)
        out[valid] = np.rint(np.clip((kept - band.lo) * scale, 0.0, 255.0)).astype(np.uint8)
    return out


def stretch_to_8bit(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, str]:
    """Map `values` to uint8 by the 2nd-98th percentile of those where `valid` is true; the others become 0.

    `valid` must exclude NaN and inf. Returns the array and the mapping used: "percentile"; "min-max" when the
    two percentiles coincide; "constant" (valid pixels 128, mid-gray); "empty" (no valid pixel, all black).
    """
    band = percentile_range(values, valid)
    return apply_range(values, valid, band), band.method


def valid_values(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`valid` less the NaN and inf of `values` (which integer bands cannot hold)."""
    return valid if np.issubdtype(values.dtype, np.integer) else valid & np.isfinite(values)


def render_rgb(values: np.ndarray, valid: np.ndarray, ranges: Sequence[BandRange]) -> Image.Image:
    """RGB image of 3 bands (or 1, as grayscale) [bands, height, width], each mapped to 8-bit by its range."""
    channels = [apply_range(v, valid_values(v, m), r) for v, m, r in zip(values, valid, ranges, strict=True)]
    return Image.fromarray(np.stack(channels, axis=-1) if len(channels) == 3 else channels[0]).convert("RGB")


def needs_rasterio(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a raster for `read_raster` rather than for PIL.

    True for a .tif/.tiff/.jp2 file that rasterio opens, with two or more bands, other than 8-bit red, green,
    blue (+ alpha). False for anything rasterio cannot open, so that PIL's own error reports it.
    """
    if Path(path).suffix.lower() not in RASTER_SUFFIXES:
        return False
    import rasterio

    try:
        with _opened(path) as dataset:
            return dataset.count >= 2 and not _pil_renders(dataset)
    except rasterio.errors.RasterioError:
        return False


def read_raster(path: str | os.PathLike[str], max_pixels: int) -> RenderedRaster:
    """Read a multi-band raster and render it to RGB as the module doc says.

    Raises `RasterError` naming the file when it has more than `max_pixels` pixels (checked from the header,
    before any pixel is read) or cannot be read.
    """
    import rasterio

    try:
        with _opened(path) as dataset:
            width, height = dataset.width, dataset.height
            if width * height > max_pixels:
                raise RasterError(
                    f"{path}: raster is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} pixels (pass a larger max_pixels to load it anyway)"
                )
            bands, why = _choose_bands(dataset)
            values = dataset.read(bands)
            valid = dataset.read_masks(bands) != 0
            mode = f"{dataset.count}-band {'/'.join(dict.fromkeys(dataset.dtypes))}"
    except rasterio.errors.RasterioError as e:
        # rasterio's read error only says "see previous exception"; GDAL's own message is its cause.
        raise RasterError(f"{path}: cannot be read as a raster ({e.__cause__ or e})") from e

    image, how = _render(bands, values, valid)
    subject = f"bands {', '.join(map(str, bands))}" if len(bands) == 3 else f"band {bands[0]}"
    return RenderedRaster(image, (width, height), mode, f"{subject} ({why}) of {mode}, {how}")


def _render(bands: list[int], values: np.ndarray, valid: np.ndarray) -> tuple[Image.Image, str]:
    """The RGB image of the 3 (or 1, as grayscale) read `bands`, and how their values became 8-bit."""
    ranges = [
        BandRange("uint8") if v.dtype == np.uint8 else percentile_range(v, valid_values(v, m))
        for v, m in zip(values, valid, strict=True)
    ]
    methods = [r.method for r in ranges]
    if len(set(methods)) > 1:
        notes = [f"band {band} {_BAND_RENDERINGS[method]}" for band, method in zip(bands, methods, strict=True)]
    else:
        notes = [("each " if len(bands) == 3 else "") + _BAND_RENDERINGS[methods[0]]]
    if len(bands) == 1:
        notes.append("replicated to 3 channels")
    if not valid.all():
        notes.append("nodata shown black")
    if not all(valid_values(v, np.ones(v.shape, dtype=bool)).all() for v in values):
        notes.append("non-finite values set to 0")
    return render_rgb(values, valid, ranges), ", ".join(notes)


@contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[DatasetReader]:
    import rasterio

    # Plain TIFFs without georeferencing are fine here; rasterio would warn about every one of them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            yield dataset


def _pil_renders(dataset: DatasetReader) -> bool:
    # PIL shows the first three samples as red, green, blue whatever GDAL's colour interpretation says, and
    # a fourth as alpha; so only files that say exactly that are left to it.
    interpretation = tuple(ci.name for ci in dataset.colorinterp)
    return set(dataset.dtypes) == {"uint8"} and interpretation in (_COLOURS, (*_COLOURS, "alpha"))


def _choose_bands(dataset: DatasetReader) -> tuple[list[int], str]:
    """The 1-based bands to show as red, green, blue (or one band as grayscale), and why those."""
    return choose_rgb_bands([ci.name for ci in dataset.colorinterp], dataset.descriptions)


def choose_rgb_bands(interpretation: Sequence[str], names: Sequence[str | None]) -> tuple[list[int], str]:
    """The 1-based bands to show as red, green, blue (or one as grayscale) by the rules of the module doc.

    `interpretation` holds each band's GDAL colour interpretation name ("red", "alpha", "undefined", ...),
    `names` its description or name (None when it has none). Returns the bands and why those.
    """
    bands = _rgb_bands(interpretation, lambda label, colour: label == colour)
    if bands:
        return bands, "red, green, blue by colour interpretation"
    bands = _rgb_bands(names, lambda label, colour: bool(_DESCRIBES[colour].search(label)))
    if bands:
        return bands, "red, green, blue by band description"
    bands = _rgb_bands(names, lambda label, colour: label.strip().upper() == _SENTINEL2_NAMES[colour])
    if bands:
        return bands, f"red, green, blue by Sentinel-2 band name {', '.join(_SENTINEL2_NAMES.values())}"
    colour_bands = [band for band, name in enumerate(interpretation, 1) if name != "alpha"]
    if len(colour_bands) >= 3:
        return colour_bands[:3], "first three bands: no red, green, blue colour interpretation or description"
    return colour_bands[:1] or [1], "grayscale: fewer than three non-alpha bands"


def _rgb_bands(labels: Sequence[str | None], names: Callable[[str, str], bool]) -> list[int] | None:
    """The first band labelled red, green and blue each, if all three are found in distinct bands."""
    bands = [
        next((band for band, label in enumerate(labels, 1) if label and names(label, colour)), None)
        for colour in _COLOURS
    ]
    return bands if None not in bands and len(set(bands)) == 3 else None
