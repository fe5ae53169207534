import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.io import DatasetReader
from rasterio.transform import Affine

from skyeye.geotiff import needs_rasterio
from skyeye.images import ImageError, LoadedImage, load_image

FIRST_THREE = "first three bands: no red, green, blue colour interpretation or description"


def _write(
    path: Path,
    bands: np.ndarray,
    colorinterp: list[ColorInterp] | None = None,
    descriptions: list[str] | None = None,
    **profile,
) -> Path:
    """A georeferenced GeoTIFF (UTM 33N, 10 m pixels) of `bands` [count, height, width]."""
    count, height, width = bands.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=bands.dtype,
        crs="EPSG:32633",
        transform=Affine(10.0, 0.0, 500_000, 0.0, -10.0, 4_000_000),
        **profile,
    ) as dataset:
        dataset.write(bands)
        if colorinterp:
            dataset.colorinterp = colorinterp
        for band, description in enumerate(descriptions or [], 1):
            dataset.set_band_description(band, description)
    return path


def _stretched(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The 2nd-98th percentile stretch of the valid values computed by hand; invalid pixels 0."""
    lo, hi = np.percentile(values[valid].astype(np.float64), [2, 98])
    scaled = np.clip((values.astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255)
    return np.where(valid, np.rint(np.nan_to_num(scaled)), 0)


def _rgb(loaded: LoadedImage) -> np.ndarray:
    assert loaded.image.mode == "RGB"
    return np.asarray(loaded.image).astype(int)


def _assert_close(channel: np.ndarray, expected: np.ndarray) -> None:
    # float32 (ours) against float64 (the hand computation) may round a value on a .5 boundary apart.
    assert np.abs(channel - expected).max() <= 1


def _gradients(height: int, width: int, count: int) -> np.ndarray:
    """Bands that cannot be mistaken for one another: along x, along y, along the diagonal, then noise."""
    y, x = np.mgrid[0:height, 0:width]
    patterns = [x * 100, y * 300, (x + y) % 7 * 500]
    rng = np.random.default_rng(0)
    patterns += [rng.integers(0, 5000, (height, width)) for _ in range(count - 3)]
    return np.stack(patterns[:count]) + 1000


def test_channel_order_follows_colour_interpretation(tmp_path):
    bands = _gradients(16, 24, 4).astype(np.uint16)
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    path = _write(tmp_path / "bgrn.tif", bands, colorinterp=interp)
    loaded = load_image(path)
    out = _rgb(loaded)
    everywhere = np.ones(bands.shape[1:], dtype=bool)
    for channel, band in enumerate((3, 2, 1)):
        _assert_close(out[..., channel], _stretched(bands[band - 1], everywhere))
    assert loaded.path == str(path)
    assert loaded.image.size == loaded.original_size == (24, 16)
    assert loaded.original_mode == "4-band uint16"
    assert loaded.rendering == (
        "bands 3, 2, 1 (red, green, blue by colour interpretation) of 4-band uint16, "
        "each stretched 2–98 percentile to 8-bit"
    )


def test_band_descriptions_name_colours_as_words(tmp_path):
    bands = _gradients(12, 10, 5).astype(np.uint16)
    names = ["near infrared", "red edge 1", "Blue", "green", "B4_red"]
    loaded = load_image(_write(tmp_path / "described.tif", bands, descriptions=names))
    out = _rgb(loaded)
    everywhere = np.ones(bands.shape[1:], dtype=bool)
    for channel, band in enumerate((5, 4, 3)):
        _assert_close(out[..., channel], _stretched(bands[band - 1], everywhere))
    assert loaded.rendering.startswith("bands 5, 4, 3 (red, green, blue by band description) of 5-band uint16")


def test_six_band_float_shows_first_three_stretched(tmp_path):
    bands = (_gradients(20, 30, 6) / 7).astype(np.float32)
    loaded = load_image(_write(tmp_path / "six.tif", bands))
    out = _rgb(loaded)
    everywhere = np.ones(bands.shape[1:], dtype=bool)
    for channel in range(3):
        _assert_close(out[..., channel], _stretched(bands[channel], everywhere))
    assert out.min() == 0 and out.max() == 255
    assert loaded.original_mode == "6-band float32"
    stretched = "each stretched 2–98 percentile to 8-bit"
    assert loaded.rendering == f"bands 1, 2, 3 ({FIRST_THREE}) of 6-band float32, {stretched}"


def test_nodata_is_black_and_left_out_of_the_percentiles(tmp_path):
    rng = np.random.default_rng(3)
    bands = rng.integers(1000, 2000, (3, 20, 20)).astype(np.uint16)
    bands[:, :5, :] = 0  # a quarter of the scene outside the swath
    bands[:, 10, 10] = (1500, 1200, 1900)
    loaded = load_image(_write(tmp_path / "swath.tif", bands, nodata=0))
    out = _rgb(loaded)
    assert (out[:5] == 0).all()
    valid = bands[0] != 0
    for channel in range(3):
        _assert_close(out[..., channel], _stretched(bands[channel], valid))
    # Pixel (10, 10) of band 1 by hand, from the percentiles of the valid values only ...
    lo, hi = np.percentile(bands[0][valid].astype(np.float64), [2, 98])
    assert abs(out[10, 10, 0] - round((1500 - lo) * 255 / (hi - lo))) <= 1
    # ... which the nodata zeros would have pulled far down.
    lo_all, hi_all = np.percentile(bands[0].astype(np.float64), [2, 98])
    assert abs(out[10, 10, 0] - round((1500 - lo_all) * 255 / (hi_all - lo_all))) > 30
    assert loaded.rendering.endswith("each stretched 2–98 percentile to 8-bit, nodata shown black")


def test_nan_constant_and_empty_bands(tmp_path):
    bands = (_gradients(10, 14, 3) / 3).astype(np.float32)
    bands[0, 0, 0], bands[0, 1, 1] = np.nan, np.inf
    bands[1] = np.nan
    bands[2] = 5.0
    bands[2, 3, 3] = np.nan
    loaded = load_image(_write(tmp_path / "nan.tif", bands))
    out = _rgb(loaded)
    _assert_close(out[..., 0], _stretched(bands[0], np.isfinite(bands[0])))
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 0
    assert (out[..., 1] == 0).all()
    assert out[3, 3, 2] == 0
    assert (np.delete(out[..., 2].ravel(), 3 * 14 + 3) == 128).all()
    assert loaded.rendering == (
        f"bands 1, 2, 3 ({FIRST_THREE}) of 3-band float32, band 1 stretched 2–98 percentile to 8-bit, "
        "band 2 rendered black (no valid values), band 3 rendered mid-gray (constant), non-finite values set to 0"
    )


def test_two_bands_show_the_first_as_grayscale(tmp_path):
    bands = _gradients(8, 9, 2).astype(np.int16)
    loaded = load_image(_write(tmp_path / "sar.tif", bands))
    out = _rgb(loaded)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    _assert_close(out[..., 0], _stretched(bands[0], np.ones(bands.shape[1:], dtype=bool)))
    assert loaded.rendering == (
        "band 1 (grayscale: fewer than three non-alpha bands) of 2-band int16, "
        "stretched 2–98 percentile to 8-bit, replicated to 3 channels"
    )


def test_uint8_bands_kept_as_is_in_colour_interpretation_order(tmp_path):
    bands = np.random.default_rng(4).integers(0, 256, (4, 6, 7), dtype=np.uint8)
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    path = _write(tmp_path / "bgr8.tif", bands, colorinterp=interp)
    assert needs_rasterio(path)
    loaded = load_image(path)
    assert np.array_equal(np.asarray(loaded.image), np.stack([bands[2], bands[1], bands[0]], axis=-1))
    assert loaded.rendering.endswith("of 4-band uint8, each kept as is")


def test_rgb_uint8_geotiff_still_goes_through_pil(tmp_path):
    bands = np.random.default_rng(5).integers(0, 256, (3, 6, 7), dtype=np.uint8)
    path = _write(tmp_path / "rgb.tif", bands)
    assert not needs_rasterio(path)
    loaded = load_image(path)
    assert np.array_equal(np.asarray(loaded.image), np.moveaxis(bands, 0, -1))
    assert loaded.original_mode == "RGB"
    assert loaded.rendering == "RGB as is"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("single.tif", False), ("rgba.tif", False), ("four.TIFF", True), ("four.png", False)],
)
def test_needs_rasterio(tmp_path, name, expected):
    if name == "single.tif":
        _write(tmp_path / name, np.ones((1, 4, 4), dtype=np.uint16))
    elif name == "rgba.tif":
        Image.new("RGBA", (4, 4), (1, 2, 3, 4)).save(tmp_path / name)
    else:
        _write(tmp_path / name, np.ones((4, 4, 4), dtype=np.uint16))
    assert needs_rasterio(tmp_path / name) is expected


def test_unreadable_tif_is_left_to_pil(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("definitely not pixels\n")
    assert not needs_rasterio(path)
    with pytest.raises(ImageError, match="not an image PIL can read") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_raster_names_the_file(tmp_path):
    bands = np.random.default_rng(6).integers(0, 60000, (4, 64, 64), dtype=np.uint16)
    data = _write(tmp_path / "full.tif", bands).read_bytes()
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: len(data) // 2])
    assert needs_rasterio(path)  # the header survives, so the failure is in the pixel data
    with pytest.raises(ImageError, match="cannot be read as a raster") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_over_pixel_limit(tmp_path):
    path = _write(tmp_path / "small.tif", np.ones((4, 10, 30), dtype=np.uint16))
    with pytest.raises(ImageError, match="30x10 = 300 pixels, over the limit of 299 pixels") as info:
        load_image(path, max_pixels=299)
    assert str(path) in str(info.value)
    assert load_image(path, max_pixels=300).image.size == (30, 10)


def test_over_pixel_limit_refused_from_the_header(tmp_path, monkeypatch):
    # A 20000 x 20000 4-band scene with no tile written: tiny on disk, gigabytes if its pixels were read.
    path = tmp_path / "sparse.tif"
    profile = dict(driver="GTiff", width=20_000, height=20_000, count=4, dtype="uint16", tiled=True, sparse_ok=True)
    with rasterio.open(path, "w", crs="EPSG:32633", transform=Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0), **profile):
        pass
    assert path.stat().st_size < 200_000

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels read before the size check")

    monkeypatch.setattr(DatasetReader, "read", no_pixels)
    monkeypatch.setattr(DatasetReader, "read_masks", no_pixels)
    with pytest.raises(ImageError, match="over the limit of 1000000 pixels") as info:
        load_image(path, max_pixels=1_000_000)
    assert str(path) in str(info.value)


def test_rasterio_is_imported_only_for_raster_files(tmp_path):
    png = tmp_path / "plain.png"
    Image.new("RGB", (3, 3)).save(png)
    code = (
        "import sys; from skyeye.images import load_image; "
        f"load_image({str(png)!r}); assert 'rasterio' not in sys.modules, 'rasterio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sentinel2_band_names_pick_red_green_blue(tmp_path):
    # A B02, B03, B04, B08 stack is blue, green, red, NIR: shown in file order its red and blue would swap.
    bands = _gradients(10, 12, 4).astype(np.uint16)
    loaded = load_image(_write(tmp_path / "s2.tif", bands, descriptions=["B02", "B03", "B04", "B08"]))
    out = _rgb(loaded)
    everywhere = np.ones(bands.shape[1:], dtype=bool)
    for channel, band in enumerate((3, 2, 1)):
        _assert_close(out[..., channel], _stretched(bands[band - 1], everywhere))
    assert loaded.rendering.startswith("bands 3, 2, 1 (red, green, blue by Sentinel-2 band name B04, B03, B02)")
