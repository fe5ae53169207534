"""Pixel boxes -> map coordinates and WGS84 longitude / latitude.

A box in pixels (x right, y down, continuous: pixels 0..9 are 0..10) becomes a polygon of its four corners,
each sent through the raster's georeferencing. Sending all four matters: with a rotated or sheared affine
transform the box is a parallelogram on the map, and two opposite corners do not define it.

A raster is georeferenced by one of:

- an affine geotransform and a CRS (the usual GeoTIFF): map = transform * (x, y);
- ground control points only (no geotransform): GDAL's GCP transformer (a first-order polynomial fitted to
  the GCPs, as `gdalwarp` does by default), in the GCPs' CRS;
- nothing (no CRS): coordinates stay in pixels and `how` says so; there is no longitude / latitude then.

Longitude / latitude is WGS84 (EPSG:4326) in x = longitude, y = latitude order, as RFC 7946 GeoJSON wants.

`georeference_of` gives the georeferencing of an image loaded by `skyeye.images.load_image` (for `skyeye ask`,
`chat`, `web`), when its boxes' pixels are the raster's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.io import DatasetReader
    from shapely import Polygon

    from skyeye.images import LoadedImage

Point = tuple[float, float]
WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class Georeference:
    """How the pixels of one raster sit on the map."""

    crs: CRS | None
    transform: Affine | None  # pixel (x, y) -> map, when the raster has a geotransform
    gcps: tuple[Any, ...] = ()  # rasterio GroundControlPoints, when it has only those
    how: str = ""  # one line for people: what the coordinates are

    @classmethod
    def of(cls, dataset: DatasetReader) -> Georeference:
        """The georeferencing of an open rasterio dataset."""
        gcps, gcp_crs = dataset.gcps
        if dataset.crs is not None:
            return cls(dataset.crs, dataset.transform, how=f"map coordinates in {_crs_name(dataset.crs)}")
        if gcps and gcp_crs is not None:
            how = f"map coordinates in {_crs_name(gcp_crs)}, from {len(gcps)} ground control points (first-order fit)"
            return cls(gcp_crs, None, tuple(gcps), how)
        return cls(None, None, how="pixel coordinates (x right, y down): the raster has no CRS")

    @property
    def has_crs(self) -> bool:
        return self.crs is not None

    def corners(self, box: Sequence[float]) -> list[Point]:
        """The box's corners top-left, top-right, bottom-right, bottom-left, in map (or pixel) coordinates."""
        x1, y1, x2, y2 = box
        pixels = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        if self.crs is None:
            return [(float(x), float(y)) for x, y in pixels]
        if self.transform is not None:
            return [tuple(map(float, self.transform @ point)) for point in pixels]
        from rasterio.transform import GCPTransformer

        with GCPTransformer(list(self.gcps)) as transformer:
            xs, ys = transformer.xy([y for _, y in pixels], [x for x, _ in pixels], offset="ul")
        return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]

    def polygon(self, box: Sequence[float]) -> Polygon:
        """The box as a closed polygon in map (or pixel) coordinates."""
        from shapely import Polygon

        return Polygon(self.corners(box))

    def to_lonlat(self, points: Sequence[Point]) -> list[Point]:
        """Map coordinates -> WGS84 (longitude, latitude); ValueError when the raster has no CRS."""
        if self.crs is None:
            raise ValueError("no longitude / latitude: the raster has no CRS")
        from pyproj import Transformer

        transformer = Transformer.from_crs(self.crs.to_wkt(), WGS84, always_xy=True)
        lons, lats = transformer.transform([x for x, _ in points], [y for _, y in points])
        return [(float(lon), float(lat)) for lon, lat in zip(lons, lats, strict=True)]

    def box_lines(self, box: Sequence[float]) -> list[str]:
        """The box's corners (top-left, top-right, bottom-right, bottom-left) for people: map, then lon/lat."""
        coordinates = self.box_coordinates(box)
        if "map" not in coordinates:
            return []
        name = _crs_name(self.crs) if self.crs.to_epsg() else "map"
        return [f"{name} " + " ".join(f"({x:.2f}, {y:.2f})" for x, y in coordinates["map"]),
                "lon/lat " + " ".join(f"({x:.6f}, {y:.6f})" for x, y in coordinates["lonlat"])]  # fmt: skip

    def box_coordinates(self, box: Sequence[float]) -> dict:
        """A pixel box's corners for JSON: `map` (in `crs`) and `lonlat`, or `pixels` only without a CRS."""
        corners = self.corners(box)
        if self.crs is None:
            return {"pixels": [list(point) for point in corners]}
        return {"map": [list(p) for p in corners], "lonlat": [list(p) for p in self.to_lonlat(corners)]}

    def describe(self) -> dict:
        """The georeferencing for JSON: CRS (EPSG code or WKT), the affine transform's six numbers, or GCPs."""
        if self.crs is None:
            return {"crs": None, "how": self.how}
        described: dict = {"crs": _crs_name(self.crs), "how": self.how}
        if self.transform is not None:
            described["transform"] = list(self.transform)[:6]
        else:
            described["gcps"] = len(self.gcps)
        return described


def georeference_of(image: LoadedImage) -> Georeference | None:
    """The georeferencing of the raster file `image` was loaded from, when it has a CRS (or GCPs in one) and the
    image's pixels are the raster's; None otherwise (not a .tif/.tiff/.jp2 file, no CRS, in memory).

    Only the header is read. The frames can differ: PIL turns a TIFF upright by its orientation tag (`load_image`
    does, for the 8-bit RGB and single-band rasters PIL reads), GDAL and the transform do not; the boxes of such
    an image are not on the raster's grid, so it has no georeferencing here.
    """
    from skyeye.geotiff import RASTER_SUFFIXES, needs_rasterio

    if image.path is None or Path(image.path).suffix.lower() not in RASTER_SUFFIXES or not Path(image.path).is_file():
        return None
    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(image.path) as dataset:
                size, georeference = (dataset.width, dataset.height), Georeference.of(dataset)
    except rasterio.errors.RasterioError:
        return None
    if not georeference.has_crs or size != image.original_size:
        return None
    return georeference if needs_rasterio(image.path) or _stored_upright(image.path) else None


def _stored_upright(path: str) -> bool:
    """Whether PIL shows the file as stored: no orientation tag that turns or mirrors it."""
    from PIL import ExifTags, Image

    try:
        with Image.open(path) as opened:
            return opened.getexif().get(ExifTags.Base.Orientation, 1) not in range(2, 9)
    except (OSError, SyntaxError, ValueError):
        return True  # PIL does not read it, so it turns nothing


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()
