"""An image with boxes drawn on it (`skyeye ask --draw`), saved on its source's map grid when it can be.

To a .tif / .tiff file, the drawing of a georeferenced source is written as a GeoTIFF (8-bit RGB, deflate) with
the source's CRS and transform (or its ground control points), so that it lies on the source in QGIS. Other
extensions, and sources without georeferencing, are written by PIL as before; the returned note says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from skyeye.geo.georef import Georeference

GEOTIFF_SUFFIXES = (".tif", ".tiff")


def save_drawing(drawing: Image.Image, path: str | os.PathLike[str], georeference: Georeference | None,
                 source: str | os.PathLike[str]) -> str:  # fmt: skip
    """Writes `drawing` (in the pixels of `source`) to `path`; returns how it was georeferenced, for people."""
    path = Path(path)
    as_geotiff = path.suffix.lower() in GEOTIFF_SUFFIXES
    if georeference is None:
        drawing.save(path)
        return f"not georeferenced: {source} has no georeferencing" if as_geotiff else ""
    where = georeference.describe()["crs"]
    if not as_geotiff:
        drawing.save(path)
        return f"not georeferenced: write a .tif to keep {source}'s {where}"
    write_geotiff(drawing, georeference, path)
    return f"a GeoTIFF in {where} on {source}'s grid"


def write_geotiff(image: Image.Image, georeference: Georeference, path: Path) -> None:
    """`image` as an 8-bit RGB GeoTIFF whose pixels sit where `georeference` puts the source's."""
    import rasterio

    pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    placed = {"crs": georeference.crs}
    if georeference.transform is not None:
        placed["transform"] = georeference.transform
    else:
        placed["gcps"] = list(georeference.gcps)
    count, height, width = pixels.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype="uint8",
                       photometric="RGB", compress="deflate", **placed) as out:  # fmt: skip
        out.write(pixels)
