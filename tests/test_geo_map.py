"""`map_scenes` end to end on GeoTIFFs written here, with a stand-in model that finds known objects per tile."""

import json
import warnings

import geopandas
import numpy as np
import pytest
import rasterio
from geopandas.testing import assert_geodataframe_equal
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine
from shapely import union_all

from geo_helpers import UTM, UTM_TRANSFORM, StandInModel, paint, write_raster
from skyeye.geo.mapper import map_scenes
from skyeye.geo.scene import open_scene

# Objects of the UTM scene (value in band B04: x1, y1, x2, y2 in pixels, end exclusive). Tiles are 100 px
# overlapping by 20, at x 0, 80, 157 and y 0, 80, 83 of the 257 x 183 scene.
OBJECTS = {
    2000: (10, 10, 30, 25),  # inside one tile
    2200: (90, 40, 130, 60),  # cut by tile 0's right edge, whole in tile 1
    2400: (150, 20, 200, 35),  # longer than the overlap: both tiles see a part
    2600: (170, 75, 190, 95),  # across a corner of four tiles, seen in six
    2800: (220, 130, 240, 150),  # whole in two overlapping tiles
}
PARTS = {2000: 1, 2200: 2, 2400: 2, 2600: 6, 2800: 2}


def _utm_scene(path, nodata=True):
    """257 x 183, 4 bands B02 B03 B04 B08 (uint16), 10 m UTM pixels; the lower-left block is nodata."""
    bands = np.full((4, 183, 257), 1000, dtype=np.uint16)
    if nodata:
        bands[:, 80:, :100] = 0  # the two tiles at x 0 with y 80 and 83 have no valid pixel
    paint(bands, OBJECTS, band=2)
    profile = {"nodata": 0} if nodata else {}
    return write_raster(path, bands, descriptions=["B02", "B03", "B04", "B08"], **profile)


def _map(model, scene, out, task="detection", **options):
    options = {"question": "tank", "tile_size": 100, "overlap": 20, "stretch": "0,3000", "progress": False,
               **options}  # fmt: skip
    return map_scenes(model, [scene], task, out=out, **options)


def _corners(transform, box):
    """The four corners of a pixel box through an affine transform, by hand: x' = a x + b y + c, y' = d x + e y + f."""
    a, b, c, d, e, f = list(transform)[:6]
    x1, y1, x2, y2 = box
    return [(a * x + b * y + c, d * x + e * y + f) for x, y in [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]]


def _assert_ring(coords, expected, tolerance=1e-6):
    np.testing.assert_allclose(np.asarray(list(coords)), np.asarray(expected), rtol=0, atol=tolerance)


def _by_box(layer):
    return {tuple(int(v) for v in row.pixel_box.split()): row for row in layer.itertuples()}


def test_detection_writes_one_polygon_per_object_at_its_exact_map_coordinates(tmp_path):
    scene = _utm_scene(tmp_path / "utm.tif")
    result = _map(StandInModel(), scene, tmp_path / "tanks.gpkg")
    report = result.report
    assert (report.tiles, report.answered, report.skipped_nodata) == (9, 7, 2)
    assert report.plans[0].bands.describe() == "bands B04, B03, B02 (red, green, blue by Sentinel-2 band name " \
        "B04, B03, B02)"  # fmt: skip
    assert report.features == 5 and report.boxes_found == sum(PARTS.values())

    layer = geopandas.read_file(tmp_path / "tanks.gpkg")
    assert layer.crs == UTM
    features = _by_box(layer)
    assert set(features) == set(OBJECTS.values())
    for value, box in OBJECTS.items():
        feature = features[box]
        _assert_ring(feature.geometry.exterior.coords, _corners(UTM_TRANSFORM, box))
        assert (feature.label, feature.task, feature.question) == ("tank", "detection", "tank")
        assert feature.parts == PARTS[value]
        assert (feature.source, feature.model) == (str(scene), "stand-in")
        assert feature.tile.startswith("r") and feature.answer.startswith("<p>tank</p>")


def test_geojson_is_wgs84_lon_lat(tmp_path):
    scene = _utm_scene(tmp_path / "utm.tif")
    _map(StandInModel(), scene, tmp_path / "tanks.geojson")
    written = json.loads((tmp_path / "tanks.geojson").read_text())
    assert "crs" not in written  # RFC 7946: always WGS84 longitude / latitude
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    found = {tuple(int(v) for v in f["properties"]["pixel_box"].split()): f for f in written["features"]}
    assert set(found) == set(OBJECTS.values())
    for box, feature in found.items():
        expected = [to_lonlat.transform(x, y) for x, y in _corners(UTM_TRANSFORM, box)]
        ring = feature["geometry"]["coordinates"][0]
        assert 15 < ring[0][0] < 16 and 36 < ring[0][1] < 37  # UTM 33N near 500 km east, 4000 km north
        # RFC 7946's right-hand rule may reverse the ring; the corners are the same.
        _assert_ring(sorted(map(tuple, ring[:-1])), sorted(expected[:-1]), tolerance=1e-7)


def test_rotated_transform_gives_the_rotated_box_not_two_corners(tmp_path):
    rotated = Affine.translation(600_000, 5_000_000) @ Affine.rotation(30) @ Affine.scale(2, -2)
    bands = paint(np.full((3, 100, 120), 1000, dtype=np.uint16), {2500: (30, 20, 60, 50)})
    scene = write_raster(tmp_path / "rotated.tif", bands, transform=rotated)
    result = _map(StandInModel(), scene, tmp_path / "rotated.fgb")
    layer = geopandas.read_file(tmp_path / "rotated.fgb")
    assert len(layer) == 1 and result.report.boxes_found == 2  # both tiles saw it whole: one object
    ring = list(layer.geometry[0].exterior.coords)
    _assert_ring(ring, _corners(rotated, (30, 20, 60, 50)))
    assert len({round(x, 6) for x, _ in ring[:-1]}) == 4  # a rotated square: no two corners share an x


def test_per_tile_tasks_cover_every_pixel_with_tile_polygons(tmp_path):
    scene = _utm_scene(tmp_path / "full.tif", nodata=False)
    result = _map(StandInModel(), scene, tmp_path / "captions.gpkg", task="caption", question=None)
    layer = geopandas.read_file(tmp_path / "captions.gpkg")
    assert len(layer) == result.report.tiles == 9
    footprint = geopandas.GeoSeries.from_wkt(["POLYGON ((500000 4000000, 502570 4000000, 502570 3998170, "
                                              "500000 3998170, 500000 4000000))"])[0]  # fmt: skip
    covered = union_all(layer.geometry.values)
    assert covered.equals(footprint)
    assert set(layer.question) == {"Briefly describe this image."}
    counts = dict(zip(layer.tile, layer.answer, strict=True))
    assert counts["r0c0"] == "2 objects"  # the object inside it and the part of the one cut at its edge


def test_one_stretch_for_the_whole_scene(tmp_path):
    y, x = np.mgrid[0:150, 0:180]
    bands = np.stack([x * 10 + y, x * 7 + 3 * y, 2000 - x * 5]).astype(np.uint16)
    scene = write_raster(tmp_path / "gradient.tif", bands)
    model = StandInModel()
    _map(model, scene, tmp_path / "out.gpkg", task="caption", stretch=None, overlap=40)
    first, second = (np.asarray(model.seen[i].image) for i in (0, 1))  # tiles at x 0 and 60
    assert np.array_equal(first[:, 60:100], second[:, 0:40])  # the same pixels look the same in both tiles
    lo, hi = np.percentile(bands[0].astype(np.float64), [2, 98])
    expected = np.clip(np.rint((bands[0, :100, :100] - lo) * 255 / (hi - lo)), 0, 255)
    assert np.abs(first[..., 0] - expected).max() <= 1


def _band_folder(folder):
    """A Sentinel-2-like patch: B02 B03 B04 at 10 m (120 x 120), B8A at 20 m, B01 at 60 m."""
    folder.mkdir()
    fine = np.full((1, 120, 120), 1000, dtype=np.uint16)
    write_raster(folder / "T33_B02.tif", fine)
    write_raster(folder / "T33_B03.tif", fine)
    write_raster(folder / "T33_B04.tif", paint(fine.copy(), {2500: (40, 30, 70, 50)}))
    coarse = UTM_TRANSFORM @ Affine.scale(2)
    write_raster(folder / "T33_B8A.tif", np.full((1, 60, 60), 3000, dtype=np.uint16), transform=coarse)
    write_raster(folder / "T33_B01.tif", np.full((1, 20, 20), 700, dtype=np.uint16),
                 transform=UTM_TRANSFORM @ Affine.scale(6))  # fmt: skip
    return folder


def test_band_folder_is_read_on_the_finest_grid(tmp_path):
    from rasterio.windows import Window

    folder = _band_folder(tmp_path / "patch")
    with open_scene(folder) as scene:
        assert [b.name for b in scene.bands] == ["B01", "B02", "B03", "B04", "B8A"]
        assert (scene.width, scene.height) == (120, 120)
        values, valid = scene.read([1, 5], Window(10, 20, 50, 40))
        assert (values[0] == 700).all() and (values[1] == 3000).all() and valid.all()
    result = _map(StandInModel(), folder, tmp_path / "tanks.gpkg")
    assert result.report.plans[0].bands.labels == ("B04", "B03", "B02")
    layer = geopandas.read_file(tmp_path / "tanks.gpkg")
    assert list(layer.pixel_box) == ["40 30 70 50"]
    _assert_ring(layer.geometry[0].exterior.coords, _corners(UTM_TRANSFORM, (40, 30, 70, 50)))
    by_name = _map(StandInModel(), folder, tmp_path / "nir.gpkg", bands="b8a,B04,3")
    assert by_name.report.plans[0].bands.numbers == (5, 4, 3)
    with pytest.raises(ValueError, match="no band named 'B99'; its bands: B01, B02, B03, B04, B8A"):
        _map(StandInModel(), folder, tmp_path / "x.gpkg", bands="B99,B04,B03")


def test_gsd_resamples_tiles_and_boxes_come_back_in_scene_pixels(tmp_path):
    transform = Affine(5.0, 0.0, 500_000.0, 0.0, -5.0, 4_000_000.0)
    bands = paint(np.full((3, 200, 260), 1000, dtype=np.uint16), {2500: (40, 60, 80, 100)})
    scene = write_raster(tmp_path / "five.tif", bands, transform=transform)
    model = StandInModel()
    result = _map(model, scene, tmp_path / "tanks.gpkg", tile_size=50, overlap=10, gsd=10.0)
    plan = result.report.plans[0]
    assert plan.scale == (2.0, 2.0) and {(t.width, t.out_width) for t in plan.tiles} == {(100, 50)}
    assert {image.image.size for image in model.seen} == {(50, 50)}
    layer = geopandas.read_file(tmp_path / "tanks.gpkg")
    assert list(layer.pixel_box) == ["40 60 80 100"]
    _assert_ring(layer.geometry[0].exterior.coords, _corners(transform, (40, 60, 80, 100)))


def test_raster_without_crs_gives_pixel_coordinates(tmp_path):
    bands = paint(np.full((3, 100, 130), 1000, dtype=np.uint16), {2500: (10, 20, 30, 40)})
    scene = write_raster(tmp_path / "plain.tif", bands, crs=None)
    result = _map(StandInModel(), scene, tmp_path / "tanks.geojson")
    assert result.report.plans[0].georeference.how.startswith("pixel coordinates")
    written = json.loads((tmp_path / "tanks.geojson").read_text())
    ring = written["features"][0]["geometry"]["coordinates"][0]
    assert sorted(map(tuple, ring[:-1])) == sorted([(10, 20), (30, 20), (30, 40), (10, 40)])


def test_gcp_only_raster_is_georeferenced_through_its_control_points(tmp_path):
    bands = paint(np.full((3, 100, 130), 1000, dtype=np.uint16), {2500: (10, 20, 30, 40)})
    path = write_raster(tmp_path / "gcps.tif", bands, crs=None)
    corners = [(0, 0), (130, 0), (0, 100), (130, 100)]
    gcps = [GroundControlPoint(row, col, *(UTM_TRANSFORM @ (col, row))) for col, row in corners]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "r+") as dataset:
            dataset.gcps = (gcps, rasterio.crs.CRS.from_string(UTM))
    result = _map(StandInModel(), path, tmp_path / "tanks.gpkg")
    assert "4 ground control points" in result.report.plans[0].georeference.how
    layer = geopandas.read_file(tmp_path / "tanks.gpkg")
    assert layer.crs == UTM
    _assert_ring(layer.geometry[0].exterior.coords, _corners(UTM_TRANSFORM, (10, 20, 30, 40)))


def _killed_run(tmp_path, fail_after: int, batch_size: int):
    """A clean layer (clean.gpkg) and a run of the same scene killed after `fail_after` batches: (scene, the
    killed run's layer, its tile log)."""
    scene = _utm_scene(tmp_path / "utm.tif")
    _map(StandInModel(), scene, tmp_path / "clean.gpkg", batch_size=batch_size)
    out = tmp_path / "resumed.gpkg"
    with pytest.raises(KeyboardInterrupt):
        _map(StandInModel(fail_after=fail_after), scene, out, batch_size=batch_size)
    assert not out.exists()
    return scene, out, next((tmp_path / "resumed.gpkg.parts").glob("tiles-*.jsonl"))


def test_a_killed_run_resumes_and_writes_the_same_layer(tmp_path):
    scene, out, log = _killed_run(tmp_path, fail_after=1, batch_size=2)
    assert len(log.read_text().splitlines()) == 2
    with log.open("a") as handle:
        handle.write('{"scene": 0, "tile": 8, "ans')  # a line the kill cut short
    with pytest.raises(ValueError, match="other tile_size"):
        _map(StandInModel(), scene, out, batch_size=2, tile_size=90)
    model = StandInModel()
    result = _map(model, scene, out, batch_size=2)
    assert (result.report.resumed, result.report.cut_lines) == (2, 1)
    assert len(model.seen) == 7 - 2  # only the tiles not answered before the kill
    assert not (tmp_path / "resumed.gpkg.parts").exists()
    clean, resumed = geopandas.read_file(tmp_path / "clean.gpkg"), geopandas.read_file(out)
    assert_geodataframe_equal(clean, resumed)


def test_a_tile_row_cut_just_before_its_newline_is_kept_and_the_layer_loses_nothing(tmp_path):
    scene, out, log = _killed_run(tmp_path, fail_after=2, batch_size=1)
    log.write_bytes(log.read_bytes().rstrip(b"\n"))  # the kill came between a row and its newline
    model = StandInModel()
    result = _map(model, scene, out, batch_size=1)
    assert (result.report.resumed, result.report.cut_lines) == (2, 0)
    assert len(model.seen) == 7 - 2
    assert_geodataframe_equal(geopandas.read_file(tmp_path / "clean.gpkg"), geopandas.read_file(out))


def test_bad_options_fail_before_any_tile_is_asked(tmp_path):
    scene = _utm_scene(tmp_path / "utm.tif")
    model = StandInModel()
    with pytest.raises(ValueError, match="unknown layer format '.shp'"):
        _map(model, scene, tmp_path / "out.shp")
    with pytest.raises(ValueError, match="--task vqa needs --question"):
        _map(model, scene, tmp_path / "out.gpkg", task="vqa", question=None)
    with pytest.raises(ValueError, match="--stretch '3000,0'"):
        _map(model, scene, tmp_path / "out.gpkg", stretch="3000,0")
    with pytest.raises(ValueError, match="no scene matches"):
        _map(model, tmp_path / "missing-*.tif", tmp_path / "out.gpkg")
    assert model.seen == []
