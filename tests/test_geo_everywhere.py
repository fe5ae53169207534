"""A GeoTIFF outside `skyeye map`: `ask --json` and `--draw`, `skyeye chat` and `/save`, the web app's GeoJSON.

The scenes are written here: a UTM one (4 bands uint16, read with rasterio) and an 8-bit RGB one with a rotated
transform (read with PIL). The bundled model answers one known box, `{<10><20><60><70>}` on the 0-100 grid
(its tokenizer's decode is replaced), so the expected pixels, map and lon/lat corners are computed here by hand
from the affine transform and pyproj.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Transformer
from rasterio.transform import Affine

from geo_helpers import UTM, UTM_TRANSFORM, write_raster
from skyeye.boxes import grid_to_pixel
from skyeye.cli import main
from skyeye.draw import PALETTE

GRID_BOX = (10, 20, 60, 70)
ANSWER = "<p>tank</p> {<10><20><60><70>}"
# 0.5 m pixels turned 30 degrees about the top-left corner, in UTM zone 33N.
ROTATED = Affine.translation(400_000.0, 4_500_000.0) @ Affine.rotation(30) @ Affine.scale(0.5, -0.5)


@pytest.fixture
def known_answer(monkeypatch):
    """Every answer is ANSWER, as the decoder wrote it (a box refiner leaves it as it is: these tests are about where
    boxes go on the map, not about refining them); its pixels still come from the real answer code."""
    from skyeye.model.box_refiner import BoxRefiner
    from skyeye.model.tokenizer import bundled_path, load_tokenizer

    tokenizer_class = type(load_tokenizer(bundled_path("tokenizer-tiny")))
    monkeypatch.setattr(tokenizer_class, "decode", lambda self, *a, **k: ANSWER)
    monkeypatch.setattr(BoxRefiner, "refine", lambda self, text, *where: text)


@pytest.fixture
def utm_scene(tmp_path):
    """257 x 183, bands B02 B03 B04 B08 (uint16): read with rasterio."""
    bands = np.random.default_rng(0).integers(200, 3000, (4, 183, 257), dtype=np.uint16)
    return write_raster(tmp_path / "utm.tif", bands, descriptions=["B02", "B03", "B04", "B08"])


@pytest.fixture
def rotated_scene(tmp_path):
    """121 x 95 8-bit RGB with a rotated transform: read with PIL."""
    bands = np.random.default_rng(1).integers(0, 255, (3, 95, 121), dtype=np.uint8)
    return write_raster(tmp_path / "rotated.tif", bands, transform=ROTATED, photometric="RGB")


SCENES = {"utm": ("utm_scene", UTM_TRANSFORM, (257, 183)), "rotated": ("rotated_scene", ROTATED, (121, 95))}


def expected_corners(transform, size):
    """The known box's pixels, and its corners (TL, TR, BR, BL) on the map and in lon/lat, worked out here."""
    pixels = grid_to_pixel(GRID_BOX, *size)
    x1, y1, x2, y2 = pixels
    a, b, c, d, e, f = list(transform)[:6]
    corners = [(a * x + b * y + c, d * x + e * y + f) for x, y in [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]]
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    return pixels, corners, [to_lonlat.transform(x, y) for x, y in corners]


def assert_points(actual, expected, tolerance):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected), rtol=0, atol=tolerance)


@pytest.mark.parametrize("name", list(SCENES))
def test_ask_json_gives_the_crs_transform_and_each_box_on_the_map_and_in_lonlat(name, request, known_answer, capsys):
    fixture, transform, size = SCENES[name]
    scene = request.getfixturevalue(fixture)
    assert main(["ask", str(scene), "where is the tank?", "--json", "--max-new-tokens", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_size"] == list(size)
    assert result["georeference"]["crs"] == UTM
    assert result["georeference"]["transform"] == pytest.approx(list(transform)[:6], abs=1e-9)
    pixels, corners, lonlat = expected_corners(transform, size)
    (box,) = result["boxes"]
    assert box["pixels"] == pytest.approx(list(pixels), abs=0.01)
    assert_points(box["map"], corners, 1e-6)
    assert_points(box["lonlat"], lonlat, 1e-9)


def test_ask_plain_output_lists_the_lonlat_of_each_box(utm_scene, known_answer, capsys):
    assert main(["ask", str(utm_scene), "where is the tank?", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    _, _, lonlat = expected_corners(UTM_TRANSFORM, (257, 183))
    assert f"{lonlat[0][0]:.6f}" in out and f"{lonlat[2][1]:.6f}" in out


def test_a_plain_image_gets_no_georeference(tmp_path, known_answer, capsys):
    plain = tmp_path / "plain.tif"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(plain)
    assert main(["ask", str(plain), "where is the tank?", "--json", "--max-new-tokens", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "georeference" not in result and set(result["boxes"][0]) == {"phrase", "grid", "pixels"}


@pytest.mark.parametrize("name", list(SCENES))
def test_draw_to_a_tif_writes_a_geotiff_on_the_source_grid(name, request, known_answer, tmp_path, capsys):
    fixture, transform, size = SCENES[name]
    scene, drawn = request.getfixturevalue(fixture), tmp_path / "drawn.tif"
    assert main(["ask", str(scene), "where is the tank?", "--draw", str(drawn), "--max-new-tokens", "2"]) == 0
    assert f"GeoTIFF in {UTM}" in capsys.readouterr().err
    with rasterio.open(drawn) as out, rasterio.open(scene) as source:
        assert out.crs == source.crs and out.transform.almost_equals(transform, precision=1e-9)
        assert (out.width, out.height, out.count, out.dtypes[0]) == (*size, 3, "uint8")
        drawn_pixels = out.read().transpose(1, 2, 0)
    # The boxes are drawn on the picture: pixels on the box's top edge are no longer the source's.
    x1, y1, x2, _ = (round(v) for v in grid_to_pixel(GRID_BOX, *size))
    assert drawn_pixels[y1, x1 + (x2 - x1) // 2].tolist() in [list(colour) for colour in PALETTE]


def test_draw_keeps_the_ground_control_points_of_a_gcp_only_raster(known_answer, tmp_path, capsys):
    from rasterio.control import GroundControlPoint

    points = [GroundControlPoint(row=0, col=0, x=5e5, y=4e6), GroundControlPoint(row=0, col=40, x=5e5 + 400, y=4e6),
              GroundControlPoint(row=30, col=0, x=5e5, y=4e6 - 300)]  # fmt: skip
    scene, drawn = tmp_path / "gcps.tif", tmp_path / "drawn.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(scene, "w", driver="GTiff", width=40, height=30, count=4, dtype="uint16", gcps=points,
                           crs=UTM) as source:  # fmt: skip
            source.write(np.full((4, 30, 40), 900, np.uint16))
        assert main(["ask", str(scene), "where?", "--draw", str(drawn), "--max-new-tokens", "2"]) == 0
        with rasterio.open(drawn) as out:
            kept, crs = out.gcps
    assert crs == UTM and [(p.row, p.col, p.x, p.y) for p in kept] == [(p.row, p.col, p.x, p.y) for p in points]
    assert f"GeoTIFF in {UTM}" in capsys.readouterr().err


def test_draw_says_when_the_drawing_is_not_georeferenced(utm_scene, known_answer, tmp_path, capsys):
    png = tmp_path / "drawn.png"
    assert main(["ask", str(utm_scene), "where?", "--draw", str(png), "--max-new-tokens", "2"]) == 0
    assert "not georeferenced: write a .tif" in capsys.readouterr().err
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (257, 183)

    plain, drawn = tmp_path / "plain.tif", tmp_path / "drawn.tif"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(plain)
    assert main(["ask", str(plain), "where?", "--draw", str(drawn), "--max-new-tokens", "2"]) == 0
    assert f"{plain} has no georeferencing" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(drawn) as out:
            assert out.crs is None and (out.width, out.height) == (50, 40)


def test_a_geotiff_that_pil_turns_upright_is_not_georeferenced_in_its_turned_frame(rotated_scene, tmp_path):
    from skyeye.geo.georef import georeference_of
    from skyeye.images import load_image

    assert georeference_of(load_image(rotated_scene)).crs == UTM
    # The same square raster with TIFF orientation 6 (turned 90 degrees): PIL turns it, GDAL does not.
    square = write_raster(tmp_path / "square.tif", np.zeros((3, 40, 40), np.uint8), photometric="RGB")
    with Image.open(square) as image:
        turned = tmp_path / "turned.tif"
        image.save(turned, tiffinfo={**dict(image.tag_v2), 274: 6})
    loaded = load_image(turned)
    assert loaded.original_size == (40, 40) and georeference_of(loaded) is None
    assert georeference_of(load_image(square)) is not None


@pytest.fixture
def bundled_model():
    from skyeye.model.loading import default_source, load_model

    return load_model(default_source())


def test_chat_lists_and_saves_each_box_on_the_map_and_in_lonlat(utm_scene, known_answer, bundled_model, tmp_path):
    from skyeye.serve.chat import TerminalChat

    out = io.StringIO()
    terminal = TerminalChat(bundled_model, utm_scene, out=out, max_new_tokens=2)
    terminal.ask("where is the tank?")
    _, corners, lonlat = expected_corners(UTM_TRANSFORM, (257, 183))
    listing = out.getvalue()
    assert f"{lonlat[0][0]:.6f}" in listing and f"{corners[2][0]:.1f}" in listing
    saved = tmp_path / "chat.json"
    terminal.command(f"/save {saved}")
    record = json.loads(saved.read_text())
    assert record["georeference"]["crs"] == UTM
    (box,) = record["turns"][0]["boxes"]
    assert_points(box["map"], corners, 1e-6)
    assert_points(box["lonlat"], lonlat, 1e-9)
    # The conversation keeps the georeferencing, not the image: it is small.
    assert terminal.chat.georeference.crs == UTM


def test_web_offers_the_boxes_as_rfc7946_geojson(rotated_scene, known_answer, bundled_model):
    from gradio_client import handle_file

    from test_web import new_session, served

    with served(bundled_model) as (_, url):
        session = new_session(url)
        _, about, _, _, offered = session.predict(handle_file(str(rotated_scene)), api_name="/upload")
        assert UTM in about and (offered["visible"], offered["value"]) == (False, None)  # no boxes yet
        history, _, _, _, offered = session.predict("the tank", "Grounding", [], api_name="/ask")
        _, _, lonlat = expected_corners(ROTATED, (121, 95))
        shown = "".join(part["text"] for part in history[-1]["content"] if part["type"] == "text")
        assert f"{lonlat[0][1]:.6f}" in shown
        assert offered["visible"] and offered["value"]["orig_name"] == "rotated-boxes.geojson"
        layer = json.loads(_fetch(url, offered["value"]))
    assert layer["type"] == "FeatureCollection" and "crs" not in layer  # RFC 7946: WGS84 lon/lat, said by no member
    (feature,) = layer["features"]
    assert feature["properties"]["label"] == "tank" and feature["properties"]["turn"] == 1
    ring = feature["geometry"]["coordinates"][0]
    # RFC 7946 rings run anticlockwise; GeoJSON keeps 7 decimals (1 cm).
    assert len(ring) == 5 and ring[0] == ring[-1]
    assert_points(sorted(ring[:4]), sorted(lonlat), 1e-7)


def _fetch(url: str, file_data) -> bytes:
    import httpx

    return httpx.get(file_data["url"] if file_data["url"].startswith("http") else url + file_data["url"]).content
