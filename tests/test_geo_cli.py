"""`skyeye map` with the bundled model: on a GeoTIFF written here, and on real scenes when the data is there."""

import geopandas
import numpy as np
import pytest
import rasterio
from rasterio.merge import merge

from geo_helpers import paint, write_raster
from skyeye.cli import main

from conftest import real_data


def _run(capsys, *argv):
    code = main(["map", *map(str, argv), "--no-progress", "--max-new-tokens", "8"])
    out, err = capsys.readouterr()
    return code, out, err


def test_map_captions_a_multiband_geotiff_tile_by_tile(tmp_path, capsys):
    bands = paint(np.full((4, 150, 170), 1000, dtype=np.uint16), {3000: (20, 30, 60, 70)}, band=2)
    scene = write_raster(tmp_path / "scene.tif", bands, descriptions=["B02", "B03", "B04", "B08"])
    code, out, _ = _run(capsys, scene, "--task", "caption", "--out", tmp_path / "captions.gpkg", "--tile-size",
                        "96", "--overlap", "16", "--stretch", "0,3000")  # fmt: skip
    assert code == 0
    assert "bands B04, B03, B02 (red, green, blue by Sentinel-2 band name B04, B03, B02), stretched 0–3000" in out
    assert "4 tiles; map coordinates in EPSG:32633" in out
    assert "tiles: 4 (4 read now), 4 answered, 0 skipped (no valid pixel)" in out
    assert "wrote 4 features to" in out and "(EPSG:32633)" in out
    layer = geopandas.read_file(tmp_path / "captions.gpkg")
    assert len(layer) == 4 and layer.crs == "EPSG:32633"
    assert all(layer.answer.str.len() > 0) and set(layer.task) == {"caption"}
    assert set(layer.model) == {str(layer.model[0])} and "model-tiny" in layer.model[0]


def test_map_refuses_bad_options_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import skyeye.cli

    monkeypatch.setattr(skyeye.cli, "_load", lambda args: pytest.fail("the model was loaded"))
    scene = write_raster(tmp_path / "scene.tif", np.ones((3, 10, 10), dtype=np.uint16))
    code, _, err = _run(capsys, scene, "--task", "vqa", "--out", tmp_path / "x.gpkg")
    assert code == 2 and "skyeye: error: --task vqa needs --question" in err
    code, _, err = _run(capsys, scene, "--task", "caption", "--out", tmp_path / "x.shp")
    assert code == 2 and "unknown layer format '.shp'" in err


def test_map_a_bigearthnet_band_folder(tmp_path, capsys):
    patches = real_data("geotiff", "bigearthnet_s2")
    folder = sorted(p for p in patches.iterdir() if p.is_dir())[0]
    code, out, _ = _run(capsys, folder, "--task", "scene", "--out", tmp_path / "scenes.geojson", "--tile-size", "64",
                        "--overlap", "8")  # fmt: skip
    assert code == 0
    assert "12 single-band files, coarser ones resampled bilinearly to the 120 x 120 grid of B02" in out
    assert "bands B04, B03, B02 (red, green, blue by Sentinel-2 band name" in out
    layer = geopandas.read_file(tmp_path / "scenes.geojson")
    assert len(layer) == 4 and layer.crs == "EPSG:4326"
    with rasterio.open(next(folder.glob("*_B02.tif"))) as band:
        west, south, east, north = band.bounds
        lon_lat = geopandas.GeoSeries.from_xy([west, east], [north, south], crs=band.crs).to_crs("EPSG:4326")
    np.testing.assert_allclose(layer.total_bounds, [lon_lat.x.min(), lon_lat.y.min(), lon_lat.x.max(),
                                                    lon_lat.y.max()], atol=1e-3)  # fmt: skip


def test_map_the_merged_rsvqa_hr_scene_skips_its_nodata_gap(tmp_path, capsys):
    tiles = sorted(real_data("demo_images", "rsvqa_hr").glob("*.tif"))
    merged, transform = merge([str(t) for t in tiles], nodata=0)
    assert merged.shape == (3, 1024, 3072)
    scene = write_raster(tmp_path / "rsvqa_hr.tif", merged, transform=transform, crs="EPSG:3857", nodata=0)
    code, out, _ = _run(capsys, scene, "--task", "caption", "--out", tmp_path / "captions.fgb", "--overlap", "0")
    assert code == 0
    assert "bands 1, 2, 3 (red, green, blue by colour interpretation), 8-bit kept as is" in out
    # Six columns of two 512-px tiles, two of them the gaps where the grid has no orthophoto.
    assert "tiles: 12 (12 read now), 10 answered, 2 skipped (no valid pixel)" in out
    layer = geopandas.read_file(tmp_path / "captions.fgb")
    assert len(layer) == 10 and layer.crs == "EPSG:3857"


def test_a_scene_map_with_a_legend_labels_every_tile_with_one_of_its_classes(tmp_path, capsys):
    bands = paint(np.full((3, 150, 170), 60, dtype=np.uint8), {200: (20, 30, 60, 70)}, band=1)
    scene = write_raster(tmp_path / "scene.tif", bands)
    legend = ["built-up", "cropland", "open water", "woodland"]  # a land-cover legend, not names it was trained on
    code, out, err = _run(capsys, scene, "--task", "scene", "--classes", " , ".join(legend), "--out",
                          tmp_path / "landuse.gpkg", "--tile-size", "96", "--overlap", "16")  # fmt: skip
    assert code == 0, err
    layer = geopandas.read_file(tmp_path / "landuse.gpkg")
    assert len(layer) == 4 and set(layer.label) <= set(legend)
    assert set(layer.question) == {f"Classify the image within one of the given classes: {', '.join(legend)}. "
                                   "Answer it using the above category word or phrase."}  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--task", "caption", "--classes", "forest, river"], "--classes goes with --task scene"),
        (["--task", "scene", "--classes", "forest, river", "--question", "Which?"], "takes the place of --question"),
        (["--task", "scene", "--classes", "forest"], "give two or more comma-separated class names"),
        (["--task", "scene", "--classes", "forest,,river"], "none of them empty"),
    ],
)
def test_a_bad_legend_is_refused_before_loading_the_model(options, message, tmp_path, capsys, monkeypatch):
    import skyeye.cli

    monkeypatch.setattr(skyeye.cli, "_load", lambda args: pytest.fail("the model was loaded"))
    scene = write_raster(tmp_path / "scene.tif", np.ones((3, 10, 10), dtype=np.uint8))
    code, _, err = _run(capsys, scene, *options, "--out", tmp_path / "x.gpkg")
    assert code == 2 and message in err
