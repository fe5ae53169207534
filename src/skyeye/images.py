"""Load any image a user may hand to SkyEyeGPT and turn it into the model's input tensor.

`load_image` accepts a path (``str`` or ``os.PathLike``) to anything PIL can read -- PNG, JPEG, GIF, BMP,
WebP, PIL-readable TIFF including 16-bit and float single-band rasters -- or a ``PIL.Image.Image`` that
is already in memory. It always returns an 8-bit RGB image plus a note of how it got there:

==========================  ===================================================================
source mode                 rendering
==========================  ===================================================================
RGB                         kept as is
L (grayscale), 1 (bilevel)  replicated to 3 channels
RGBA, LA, PA                alpha dropped: the colour values are kept, never composited on a background
P (palette)                 palette converted (any palette transparency is dropped the same way)
CMYK, YCbCr, LAB, HSV, ...  converted by PIL
I;16*, I, F                 2nd-98th percentile of the finite values stretched to 0-255, then
                            replicated; NaN/inf become 0; a constant image becomes mid-gray
multi-band raster           read with rasterio (see `skyeye.geotiff`): the red, green, blue bands by
(.tif, .tiff, .jp2)         colour interpretation, else by band description, else the first three;
                            uint8 kept, other types stretched per band like I;16; nodata shown black
==========================  ===================================================================

A multi-band raster is one with two or more bands that is not 8-bit red, green, blue (+ alpha), which PIL
reads as RGB/RGBA; its `original_mode` reads like ``4-band uint16`` and its rendering names the bands shown
and why, e.g. ``bands 3, 2, 1 (red, green, blue by colour interpretation) of 4-band uint16, each stretched
2–98 percentile to 8-bit``.

Files are validated before their pixels are decoded: a missing path, a directory, something PIL cannot
identify, a zero-size image, or one with more than ``max_pixels`` pixels (read from the header, so a
decompression bomb costs nothing) raises `ImageError`; so does pixel data that is truncated or corrupt.
Multi-frame files (GIF, multi-page TIFF, APNG) give their first frame, and EXIF orientation is applied: sizes
and boxes are in the upright frame.
An in-memory image is used as given (its current frame) and is never modified.

A video frame is loaded from a path written ``video.mp4#frame=N`` (also .avi, .mov, .mkv; see `skyeye.video`):
frame N of the video, decoded with PyAV, then handled like an RGB image; a missing video, one that cannot be
decoded or a frame past its end raises `ImageError` naming the file.

`to_pixel_tensor` reproduces the BLIP-2 eval processor used by SkyEyeGPT/MiniGPT-v2: bicubic resize to a
square (aspect ratio not kept, no crop, no padding), scale to 0..1, normalise per channel.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from skyeye.geotiff import RasterError, needs_rasterio, read_raster, stretch_to_8bit
from skyeye.video import VideoError, frame_reference, parse_frame_reference, read_video_frame

if TYPE_CHECKING:
    import torch

# 200 Mpx is roughly a 14000 x 14000 scene: larger than any tile in the remote-sensing VQA/captioning/
# grounding sets SkyEyeGPT is trained on, yet small enough that the decoded RGB copy (600 MB) and the
# float32 stretch buffer of a single-band raster (800 MB) fit on an ordinary workstation.
DEFAULT_MAX_PIXELS = 200_000_000

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_IN_MEMORY = "<in-memory image>"

_SIMPLE_RENDERINGS = {
    "RGB": "RGB as is",
    "L": "grayscale replicated to 3 channels",
    "1": "1-bit replicated to 3 channels",
    "LA": "grayscale replicated to 3 channels, alpha dropped",
    "RGBA": "alpha dropped",
}

_DEPTH_NAMES = {"I": "32-bit integer", "F": "32-bit float"}

_STRETCH_RENDERINGS = {
    "percentile": "stretched 2–98 percentile to 8-bit",
    "min-max": "stretched min–max to 8-bit",
    "constant": "constant image rendered mid-gray",
    "empty": "with no finite values rendered black",
}


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and says what is wrong."""


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for the model, and where it came from.

    `original_size` is the full-resolution size in the upright frame (EXIF orientation applied), the frame
    `image` and every pixel box of an answer are in; `original_mode` is the mode as stored, before
    conversion. `rendering` says how the pixels became RGB and names an EXIF orientation that was applied.
    """

    image: Image.Image
    path: str | None
    original_size: tuple[int, int]
    original_mode: str
    rendering: str


_pil_limit_lock = threading.Lock()
_pil_limit_users = 0
_pil_limit_saved: int | None = None


@contextmanager
def _pil_bomb_limit_at_least(max_pixels: int) -> Iterator[None]:
    # PIL warns above Image.MAX_IMAGE_PIXELS (~89 Mpx) and refuses above twice that, which would pre-empt
    # our own limit and message for large but legitimate scenes. Its limit is only raised, never lowered,
    # so PIL's per-tile checks still catch tiles far larger than any image we accept; the original value
    # comes back when the last concurrent load finishes.
    global _pil_limit_users, _pil_limit_saved
    with _pil_limit_lock:
        if _pil_limit_users == 0:
            _pil_limit_saved = Image.MAX_IMAGE_PIXELS
        _pil_limit_users += 1
        if Image.MAX_IMAGE_PIXELS is not None:
            Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS, max_pixels)
    try:
        with warnings.catch_warnings():
            # Only fires above max_pixels, where our own ImageError follows immediately.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        with _pil_limit_lock:
            _pil_limit_users -= 1
            if _pil_limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_limit_saved


def load_image(source: str | os.PathLike[str] | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Load `source` (a path or a PIL image) as 8-bit RGB; raise `ImageError` naming the file on failure."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if isinstance(source, Image.Image):
        with _pil_bomb_limit_at_least(max_pixels):
            return _load_opened(source, None, _IN_MEMORY, max_pixels)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or a PIL.Image.Image, got {type(source).__name__}")

    frame = parse_frame_reference(os.fsdecode(source))
    if frame is not None:
        return _load_video_frame(Path(frame[0]), frame[1], max_pixels)
    path = Path(source)
    label = str(path)
    if path.is_dir():
        raise ImageError(f"{label}: is a directory, not an image file")
    if not path.exists():
        raise ImageError(f"{label}: no such file")
    if needs_rasterio(path):
        return _load_raster(path, max_pixels)
    with _pil_bomb_limit_at_least(max_pixels):
        try:
            opened = Image.open(path)
        except Image.DecompressionBombError as e:
            raise ImageError(
                f"{label}: image is over the limit of {max_pixels} pixels; PIL refused it already from the "
                f"header as a possible decompression bomb ({e})"
            ) from e
        except UnidentifiedImageError as e:
            raise ImageError(f"{label}: not an image PIL can read ({e})") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{label}: cannot be opened as an image ({e})") from e
        with opened:
            return _load_opened(opened, label, label, max_pixels)


def _load_video_frame(video: Path, index: int, max_pixels: int) -> LoadedImage:
    label = frame_reference(str(video), index)
    if video.is_dir():
        raise ImageError(f"{video}: is a directory, not a video file")
    if not video.exists():
        raise ImageError(f"{video}: no such file (wanted frame {index})")
    try:
        frame = read_video_frame(video, index)
    except VideoError as e:
        raise ImageError(str(e)) from e
    return _load_opened(frame, label, label, max_pixels)


def _load_raster(path: Path, max_pixels: int) -> LoadedImage:
    try:
        raster = read_raster(path, max_pixels)
    except RasterError as e:
        raise ImageError(str(e)) from e
    return LoadedImage(
        image=raster.image,
        path=str(path),
        original_size=raster.size,
        original_mode=raster.mode,
        rendering=raster.rendering,
    )


def _load_opened(im: Image.Image, path: str | None, label: str, max_pixels: int) -> LoadedImage:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: zero-size image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "pixels (pass a larger max_pixels to load it anyway)"
        )
    original_mode = im.mode
    try:
        im.load()
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        # exif_transpose always returns a new image, detached from the file that is closed after this.
        upright = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label}: image data is over the limit of {max_pixels} pixels ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{label}: corrupt or truncated image data ({e})") from e
    rgb, rendering = _render_rgb(upright, label)
    if orientation in range(2, 9):  # 1 is upright already; other values are invalid and ignored by PIL too
        rendering += f"; EXIF orientation {orientation} applied (stored {width}x{height})"
    return LoadedImage(
        image=rgb,
        path=path,
        original_size=rgb.size,
        original_mode=original_mode,
        rendering=rendering,
    )


def _render_rgb(im: Image.Image, label: str) -> tuple[Image.Image, str]:
    mode = im.mode
    if mode in _SIMPLE_RENDERINGS:
        # PIL's RGBA/LA -> RGB conversion discards alpha without compositing, which is what we want.
        return im.convert("RGB"), _SIMPLE_RENDERINGS[mode]
    if mode in ("P", "PA"):
        # Going through RGBA keeps the palette colours of transparent entries instead of letting PIL
        # warn about (and special-case) palette transparency.
        dropped = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA").convert("RGB"), "palette converted" + (", alpha dropped" if dropped else "")
    if mode.startswith("I;16") or mode in _DEPTH_NAMES:
        return _stretch_single_band(im, _DEPTH_NAMES.get(mode, "16-bit"))
    try:
        return im.convert("RGB"), f"{mode} converted to RGB"
    except ValueError as e:
        raise ImageError(f"{label}: unsupported image mode {mode!r} ({e})") from e


def _stretch_single_band(im: Image.Image, depth: str) -> tuple[Image.Image, str]:
    values = np.asarray(im)
    finite = np.isfinite(values)
    notes = [] if finite.all() else ["non-finite values set to 0"]
    out, method = stretch_to_8bit(values, finite)
    rendering = ", ".join([f"{depth} {_STRETCH_RENDERINGS[method]}", "grayscale replicated", *notes])
    return Image.fromarray(out).convert("RGB"), rendering


def resize_for_model(image: Image.Image, size: int) -> Image.Image:
    """The bicubic squash to `size` x `size` that `to_pixel_tensor` applies.

    An image already `size` x `size` is only copied by it, so a caller may keep this small copy instead of the
    full image (a `skyeye.serve.session` conversation does) and get exactly the tensor the full image would give.
    """
    return image.resize((size, size), Image.Resampling.BICUBIC)


def to_pixel_tensor(
    image: Image.Image,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Bicubic-resize an RGB image to `size` x `size` and normalise it: float32 tensor [3, size, size].

    Matches the BLIP-2 eval processor of SkyEyeGPT/MiniGPT-v2 (torchvision Resize((size, size), BICUBIC),
    ToTensor, Normalize), which squashes the aspect ratio rather than cropping or padding.
    """
    import torch

    if image.mode != "RGB":
        raise ValueError(f"to_pixel_tensor needs an RGB image, got mode {image.mode!r}; use load_image first")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (one per RGB channel), got {mean!r} and {std!r}")
    if any(s == 0 for s in std):
        raise ValueError(f"std must be non-zero, got {std!r}")

    resized = resize_for_model(image, size)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).to(torch.float32).div(255)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return pixels.sub(mean_t).div(std_t).contiguous()
