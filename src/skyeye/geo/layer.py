"""Vector layers written by extension: GeoPackage (.gpkg), GeoJSON (.geojson, .json), FlatGeobuf (.fgb).

GeoPackage and FlatGeobuf keep the features' CRS (the raster's). GeoJSON is written as RFC 7946 wants it:
WGS84 longitude / latitude, whatever the raster's CRS. Features without a CRS (pixel coordinates) are
written as they are, in every format.

The layer, named after the file, is written to a temporary name beside the target and renamed into place, so
a killed write never leaves a half layer that looks whole.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import geopandas

    from skyeye.geo.georef import Georeference

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}


def driver_for(path: str | os.PathLike[str]) -> str:
    """The OGR driver for `path`'s extension; ValueError naming the supported ones otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in DRIVERS:
        raise ValueError(f"{path}: unknown layer format {suffix or '(no extension)'!r}; use {', '.join(DRIVERS)}")
    return DRIVERS[suffix]


def write_layer(features: geopandas.GeoDataFrame, path: str | os.PathLike[str]) -> Path:
    """Write `features` to `path` in the format of its extension (see the module doc); returns the path."""
    path = Path(path)
    driver = driver_for(path)
    options = {}
    if driver == "GeoJSON" and features.crs is not None:
        features = features.to_crs("EPSG:4326")
        options["layer_options"] = {"RFC7946": "YES"}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.writing{path.suffix}")
    partial.unlink(missing_ok=True)
    with warnings.catch_warnings():
        # Pixel coordinates have no CRS by design; the caller says so, and GDAL's guesses would mislead.
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        warnings.filterwarnings("ignore", "No SRS set on layer", RuntimeWarning)
        # The layer is named after the file it is written to in the end, as QGIS shows it.
        features.to_file(partial, driver=driver, layer=path.stem, engine="pyogrio", **options)
    partial.replace(path)
    return path


def write_box_layer(georeference: Georeference, boxes: Sequence[tuple[Sequence[float], dict]],
                    path: str | os.PathLike[str]) -> Path:  # fmt: skip
    """Pixel boxes, each with its attributes, as polygons through `georeference` (all four corners), written
    by `write_layer`."""
    import geopandas

    polygons = [georeference.polygon(pixels) for pixels, _ in boxes]
    rows = [attributes for _, attributes in boxes]
    return write_layer(geopandas.GeoDataFrame(rows, geometry=polygons, crs=georeference.crs), path)
