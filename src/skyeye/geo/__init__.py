"""Whole georeferenced scenes: windowed reading, band choice, one stretch per scene, tiles that cover every
pixel, boxes merged across tile seams, pixel -> map -> lon/lat, and vector layers (`skyeye map`).

One module per job:

==============  ==============================================================================================
scene.py        a raster file or a folder of single-band files, read window by window
bands.py        which bands become red, green, blue (`--bands`, else the rules of `skyeye.geotiff`)
stretch.py      one 8-bit stretch per scene (percentiles of a decimated read, or a fixed range)
tiles.py        the tile grid: size and overlap in pixels, optional resampling, last tiles shifted inward
merge.py        boxes from overlapping tiles merged into one per object, by a documented deterministic rule
georef.py       pixel boxes -> polygons in the raster's CRS (all four corners) and in WGS84 lon/lat; the
                georeferencing of an image `skyeye ask`, `chat` and `web` loaded (`georeference_of`)
features.py     tile answers -> features (tile polygons or merged box polygons) in a GeoDataFrame
layer.py        GeoPackage / GeoJSON (RFC 7946) / FlatGeobuf, chosen by extension
drawing.py      `skyeye ask --draw out.tif`: the drawn image as a GeoTIFF on the source's grid
tilelog.py      the answers of a run, tile by tile, so that a killed run resumes
mapper.py       the run: plan, read, ask in batches, share tiles among processes, merge into one layer
commands.py     `skyeye map`: options in, plain report out
==============  ==============================================================================================

`map_scenes` (in `skyeye.geo.mapper`) is the Python API.
"""

from typing import Any

__all__ = ["map_scenes"]


def __getattr__(name: str) -> Any:
    if name == "map_scenes":
        from skyeye.geo.mapper import map_scenes

        return map_scenes
    raise AttributeError(name)
