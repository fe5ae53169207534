"""Georeferencing of pixel boxes, as JSON for whoever reports boxes of a GeoTIFF (map and lon/lat corners)."""

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from geo_helpers import UTM, UTM_TRANSFORM, write_raster
from skyeye.geo.georef import Georeference


def _georef(path):
    with rasterio.open(path) as dataset:
        return Georeference.of(dataset)


def test_box_corners_in_map_and_lon_lat(tmp_path):
    georef = _georef(write_raster(tmp_path / "utm.tif", np.zeros((1, 20, 30), dtype=np.uint8)))
    assert georef.describe() == {"crs": UTM, "how": f"map coordinates in {UTM}",
                                 "transform": [10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0]}  # fmt: skip
    found = georef.box_coordinates((2, 3, 12, 8))
    corners = [(500_020, 3_999_970), (500_120, 3_999_970), (500_120, 3_999_920), (500_020, 3_999_920)]
    np.testing.assert_allclose(found["map"], corners)
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    np.testing.assert_allclose(found["lonlat"], [to_lonlat.transform(x, y) for x, y in corners], atol=1e-9)
    assert georef.transform == UTM_TRANSFORM


def test_without_crs_there_are_pixels_and_no_lon_lat(tmp_path):
    georef = _georef(write_raster(tmp_path / "plain.tif", np.zeros((1, 20, 30), dtype=np.uint8), crs=None))
    assert georef.describe() == {"crs": None, "how": "pixel coordinates (x right, y down): the raster has no CRS"}
    assert georef.box_coordinates((2, 3, 12, 8)) == {"pixels": [[2, 3], [12, 3], [12, 8], [2, 8]]}
    with pytest.raises(ValueError, match="no longitude / latitude: the raster has no CRS"):
        georef.to_lonlat([(2, 3)])
