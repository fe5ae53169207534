import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skyeye.images import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_MAX_PIXELS,
    ImageError,
    LoadedImage,
    load_image,
    to_pixel_tensor,
)


def _save(tmp_path: Path, name: str, im: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    im.save(path, **kwargs)
    return path


def _assert_rgb8(loaded: LoadedImage) -> np.ndarray:
    assert loaded.image.mode == "RGB"
    arr = np.asarray(loaded.image)
    assert arr.dtype == np.uint8
    assert arr.shape == (loaded.image.height, loaded.image.width, 3)
    return arr


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bilevel_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit PNG written row by row, so a huge canvas costs a few kilobytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def _check_stretch(loaded: LoadedImage, values: np.ndarray) -> None:
    arr = _assert_rgb8(loaded)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    gray = arr[..., 0].astype(int)
    finite = np.isfinite(values)
    lo, hi = np.percentile(values[finite], [2, 98])
    near_lo = np.unravel_index(np.argmin(np.where(finite, np.abs(values - lo), np.inf)), values.shape)
    near_hi = np.unravel_index(np.argmin(np.where(finite, np.abs(values - hi), np.inf)), values.shape)
    assert gray[near_lo] <= 1
    assert gray[near_hi] >= 254
    assert (gray[finite & (values <= lo)] == 0).all()
    assert (gray[finite & (values >= hi)] == 255).all()
    order = np.argsort(values[finite], kind="stable")
    assert (np.diff(gray[finite][order]) >= 0).all()


# ---------------------------------------------------------------- ordinary modes


def test_rgb_png_kept_as_is(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (13, 21, 3), dtype=np.uint8)
    path = _save(tmp_path, "rgb.png", Image.fromarray(arr))
    loaded = load_image(path)
    assert np.array_equal(_assert_rgb8(loaded), arr)
    assert loaded.path == str(path)
    assert loaded.original_size == (21, 13)
    assert loaded.original_mode == "RGB"
    assert loaded.rendering == "RGB as is"


def test_rgb_jpeg_and_str_path(tmp_path):
    path = _save(tmp_path, "photo.jpg", Image.new("RGB", (32, 24), (200, 100, 50)), quality=95)
    loaded = load_image(str(path))
    arr = _assert_rgb8(loaded)
    assert loaded.image.size == (32, 24)
    assert np.abs(arr.astype(int) - (200, 100, 50)).max() <= 3


def test_grayscale_replicated(tmp_path):
    arr = np.arange(60, dtype=np.uint8).reshape(6, 10)
    loaded = load_image(_save(tmp_path, "gray.png", Image.fromarray(arr)))
    out = _assert_rgb8(loaded)
    for channel in range(3):
        assert np.array_equal(out[..., channel], arr)
    assert loaded.original_mode == "L"
    assert loaded.rendering == "grayscale replicated to 3 channels"


def test_one_bit_replicated(tmp_path):
    im = Image.new("1", (9, 5), 0)
    im.putpixel((2, 3), 1)
    loaded = load_image(_save(tmp_path, "bits.png", im))
    out = _assert_rgb8(loaded)
    assert tuple(out[3, 2]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert loaded.original_mode == "1"


def test_rgba_alpha_dropped_without_compositing(tmp_path):
    im = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    im.putpixel((1, 1), (200, 150, 100, 128))
    loaded = load_image(_save(tmp_path, "rgba.png", im))
    out = _assert_rgb8(loaded)
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[1, 1]) == (200, 150, 100)
    assert loaded.rendering == "alpha dropped"


def test_la_alpha_dropped(tmp_path):
    loaded = load_image(_save(tmp_path, "la.png", Image.new("LA", (3, 3), (77, 0))))
    assert (_assert_rgb8(loaded) == 77).all()
    assert "alpha dropped" in loaded.rendering


def test_palette_converted(tmp_path):
    im = Image.new("P", (5, 5), 1)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    im.putpixel((0, 0), 0)
    loaded = load_image(_save(tmp_path, "pal.png", im))
    out = _assert_rgb8(loaded)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[4, 4]) == (0, 255, 0)
    assert loaded.original_mode == "P"
    assert loaded.rendering == "palette converted"


def test_palette_transparency_keeps_colours_without_warning(tmp_path):
    im = Image.new("P", (2, 2), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    path = _save(tmp_path, "pal_t.png", im, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(path)
    assert tuple(_assert_rgb8(loaded)[0, 0]) == (255, 0, 0)
    assert loaded.rendering == "palette converted, alpha dropped"


def test_cmyk_converted(tmp_path):
    loaded = load_image(_save(tmp_path, "cmyk.tif", Image.new("CMYK", (4, 3), (0, 255, 255, 0))))
    assert tuple(_assert_rgb8(loaded)[0, 0]) == (255, 0, 0)
    assert loaded.original_mode == "CMYK"
    assert loaded.rendering == "CMYK converted to RGB"


# ---------------------------------------------------------------- high bit depth


def test_16bit_png_stretched(tmp_path):
    values = (np.arange(40 * 50, dtype=np.uint16) * 31).reshape(40, 50)
    path = _save(tmp_path, "dem.png", Image.fromarray(values))
    loaded = load_image(path)
    assert loaded.original_mode.startswith("I")
    _check_stretch(loaded, values.astype(np.float64))
    assert "stretched 2–98 percentile" in loaded.rendering
    assert "grayscale replicated" in loaded.rendering


def test_16bit_tiff_stretched(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.integers(300, 4000, (33, 47), dtype=np.uint16)
    values[0, :5] = 65535  # a few saturated outliers must not flatten everything else
    loaded = load_image(_save(tmp_path, "band.tif", Image.fromarray(values)))
    assert loaded.original_mode == "I;16"
    assert loaded.rendering == "16-bit stretched 2–98 percentile to 8-bit, grayscale replicated"
    _check_stretch(loaded, values.astype(np.float64))


def test_float_tiff_with_nan_and_inf(tmp_path):
    values = np.linspace(-1.0, 1.0, 30 * 20, dtype=np.float32).reshape(30, 20)
    values[0, 0] = np.nan
    values[1, 1] = np.inf
    values[2, 2] = -np.inf
    loaded = load_image(_save(tmp_path, "ndvi.tif", Image.fromarray(values)))
    assert loaded.original_mode == "F"
    out = _assert_rgb8(loaded)
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 0 and out[2, 2, 0] == 0
    assert "32-bit float" in loaded.rendering and "non-finite values set to 0" in loaded.rendering
    _check_stretch(loaded, values.astype(np.float64))


def test_int32_stretched():
    values = np.arange(-500, 500, dtype=np.int32).reshape(10, 100) * 1000
    loaded = load_image(Image.fromarray(values))
    assert loaded.original_mode == "I"
    _check_stretch(loaded, values.astype(np.float64))


def test_constant_16bit_is_mid_gray(tmp_path):
    values = np.full((8, 8), 1234, dtype=np.uint16)
    loaded = load_image(_save(tmp_path, "flat.tif", Image.fromarray(values)))
    assert (_assert_rgb8(loaded) == 128).all()
    assert "constant" in loaded.rendering


def test_all_nan_float_is_black():
    loaded = load_image(Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)))
    assert (_assert_rgb8(loaded) == 0).all()


def test_mostly_constant_with_outliers_uses_min_max():
    values = np.zeros((20, 20), dtype=np.uint16)
    values[0, 0] = 1000
    out = _assert_rgb8(load_image(Image.fromarray(values)))
    assert out[0, 0, 0] == 255 and out[5, 5, 0] == 0


# ---------------------------------------------------------------- geometry and frames


@pytest.mark.parametrize("size", [(1, 1), (3, 517), (517, 3)])
def test_odd_sizes(tmp_path, size):
    path = _save(tmp_path, "odd.png", Image.new("RGB", size, (1, 2, 3)))
    loaded = load_image(path)
    assert loaded.image.size == size
    assert to_pixel_tensor(loaded.image, 16, CLIP_MEAN, CLIP_STD).shape == (3, 16, 16)


def test_multiframe_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 3
    assert tuple(_assert_rgb8(load_image(path))[3, 3]) == (255, 0, 0)


def test_multipage_tiff_gives_first_page(tmp_path):
    pages = [Image.new("L", (5, 5), value) for value in (10, 200)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert (_assert_rgb8(load_image(path)) == 10).all()


@pytest.mark.parametrize(("orientation", "band_at"), [(6, (2, 10)), (8, (37, 10))])
def test_exif_orientation_applied_and_sizes_in_the_upright_frame(tmp_path, orientation, band_at):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 20))  # left band white
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: display needs a 90° clockwise turn; 8: counter-clockwise
    path = _save(tmp_path, "rotated.jpg", im, exif=exif, quality=95)
    loaded = load_image(path)
    # Boxes are read in the frame of `image`; the reported size must be that frame, not the stored one.
    assert loaded.image.size == (20, 40)
    assert loaded.original_size == loaded.image.size
    assert f"EXIF orientation {orientation}" in loaded.rendering
    out = _assert_rgb8(loaded).astype(int)
    assert out[band_at].min() > 200  # the left band is now on top (6) or at the bottom (8)
    assert out[39 - band_at[0], 10].max() < 50


def test_exif_orientation_that_keeps_the_frame_is_not_reported(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 1  # upright already
    loaded = load_image(_save(tmp_path, "upright.jpg", Image.new("RGB", (40, 20)), exif=exif))
    assert loaded.original_size == loaded.image.size == (40, 20)
    assert "EXIF" not in loaded.rendering


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="directory") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("definitely not pixels\n")
    with pytest.raises(ImageError, match="not an image PIL can read") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_png(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = (_save(tmp_path, "full.png", Image.fromarray(arr))).read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_over_pixel_limit(tmp_path):
    path = _save(tmp_path, "big.png", Image.new("RGB", (100, 50)))
    with pytest.raises(ImageError, match="over the limit of 4999") as info:
        load_image(path, max_pixels=4999)
    assert str(path) in str(info.value)
    assert load_image(path, max_pixels=5000).image.size == (100, 50)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    made: dict[int, Path] = {}

    def make(side: int) -> Path:
        if side not in made:
            made[side] = _bilevel_png(tmp_path_factory.mktemp("bomb") / f"bomb{side}.png", side, side)
        return made[side]

    return make


@pytest.mark.parametrize(
    ("side", "max_pixels", "expected"),
    [
        # 144 Mpx: between PIL's warning and hard limits, so only our own header check stands in the way.
        (12000, 1_000_000, "12000x12000 = 144000000 pixels, over the limit of 1000000 pixels"),
        # 400 Mpx: over PIL's hard limit too; PIL's refusal is reported as ours.
        (20000, 1_000_000, "over the limit of 1000000 pixels"),
        (20000, DEFAULT_MAX_PIXELS, f"over the limit of {DEFAULT_MAX_PIXELS} pixels"),
    ],
)
def test_decompression_bomb_refused_from_header(bombs, side, max_pixels, expected):
    path = bombs(side)
    assert path.stat().st_size < 200_000
    start = time.perf_counter()
    with pytest.raises(ImageError, match=expected) as info:
        load_image(path, max_pixels=max_pixels)
    # Decoding hundreds of megapixels (plus the RGB copy) would take seconds and gigabytes.
    assert time.perf_counter() - start < 1.0
    assert str(path) in str(info.value)


def test_pil_global_limit_does_not_pre_empt_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = _save(tmp_path, "ok.png", Image.new("RGB", (60, 40), (5, 6, 7)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(path, max_pixels=10_000)
    assert loaded.image.size == (60, 40)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_zero_size_in_memory_image():
    with pytest.raises(ImageError, match="zero-size"):
        load_image(Image.new("RGB", (0, 5)))


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError):
        load_image(42)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(Image.new("RGB", (2, 2)), max_pixels=0)


# ---------------------------------------------------------------- in-memory input


def test_pil_image_input_is_not_modified():
    source = Image.new("LA", (7, 3), (90, 10))
    loaded = load_image(source)
    assert loaded.path is None
    assert loaded.original_mode == "LA"
    assert loaded.original_size == (7, 3)
    assert (_assert_rgb8(loaded) == 90).all()
    assert source.mode == "LA"
    assert loaded.image is not source


def test_import_does_not_load_torch():
    code = "import sys, skyeye.images; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- to_pixel_tensor


def test_pixel_tensor_shape_and_dtype():
    tensor = to_pixel_tensor(Image.new("RGB", (50, 30), (9, 99, 199)), 28, CLIP_MEAN, CLIP_STD)
    assert tensor.shape == (3, 28, 28)
    assert tensor.dtype == torch.float32
    assert tensor.is_contiguous()


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (12, 128, 240)])
def test_constant_colour_normalises_exactly(colour):
    tensor = to_pixel_tensor(Image.new("RGB", (37, 23), colour), 14, CLIP_MEAN, CLIP_STD)
    for channel in range(3):
        value = torch.tensor(colour[channel], dtype=torch.float32) / 255
        expected = (value - torch.tensor(CLIP_MEAN[channel])) / torch.tensor(CLIP_STD[channel])
        assert torch.equal(tensor[channel], torch.full((14, 14), expected.item()))


def test_non_square_becomes_square_without_crop():
    im = Image.new("RGB", (200, 50), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 50))  # leftmost 10% white: kept, squashed, not cropped away
    tensor = to_pixel_tensor(im, 40, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert tensor.shape == (3, 40, 40)
    assert tensor[:, :, 0].min() > 0.99
    assert tensor[:, :, -1].max() < 0.01
    assert tensor.min() >= 0 and tensor.max() <= 1


def test_pixel_tensor_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        to_pixel_tensor(Image.new("L", (4, 4)), 4, CLIP_MEAN, CLIP_STD)
