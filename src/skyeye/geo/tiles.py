"""The tile grid of a scene: every pixel in at least one tile, no tile outside the scene.

Tiles are `size` pixels square and overlap their neighbours by `overlap` pixels (both in the pixels the model
sees). Along each axis they start at 0 and step by size - overlap; the last tile is shifted inward to end at
the scene's edge instead of being dropped or padded (a strip narrower than a tile is still seen, with more
overlap), as segment-geospatial's tiled mode and torchgeo's fixed sampler do. A scene narrower than a tile
gets one tile of its own width.

With a target ground sample distance, `scale` is the scene pixels per model pixel along x and y (GSD / pixel
size): each tile then covers size x scale scene pixels, read resampled to `size` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

# geoai's and segment-geospatial's defaults, which analysts know.
DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP = 64


@dataclass(frozen=True)
class Tile:
    index: int  # position in row-major order within its scene
    row: int
    col: int
    x: int  # window in scene pixels
    y: int
    width: int
    height: int
    out_width: int  # pixels the model is given
    out_height: int

    @property
    def id(self) -> str:
        return f"r{self.row}c{self.col}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The window as a pixel box (x1, y1, x2, y2) of the scene."""
        return self.x, self.y, self.x + self.width, self.y + self.height


def offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Start of every tile along an axis `length` pixels long; the last one ends exactly at `length`."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def tile_grid(width: int, height: int, size: int, overlap: int, scale: tuple[float, float] = (1.0, 1.0)) -> list[Tile]:
    """The tiles of a `width` x `height` scene, row by row (see the module doc)."""
    if size <= 0:
        raise ValueError(f"--tile-size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"--overlap must be at least 0 and below the tile size {size}, got {overlap}")
    if width <= 0 or height <= 0:
        raise ValueError(f"a scene needs pixels, got {width} x {height}")
    scale_x, scale_y = scale
    tile_w, tile_h = max(1, round(size * scale_x)), max(1, round(size * scale_y))
    # At least one scene pixel of step, whatever the rounding: every tile must move on.
    overlap_x, overlap_y = min(round(overlap * scale_x), tile_w - 1), min(round(overlap * scale_y), tile_h - 1)
    tiles = []
    for row, y in enumerate(offsets(height, tile_h, overlap_y)):
        for col, x in enumerate(offsets(width, tile_w, overlap_x)):
            w, h = min(tile_w, width), min(tile_h, height)
            out_w = size if w == tile_w else max(1, round(w / scale_x))
            out_h = size if h == tile_h else max(1, round(h / scale_y))
            tiles.append(Tile(len(tiles), row, col, x, y, w, h, out_w, out_h))
    return tiles
