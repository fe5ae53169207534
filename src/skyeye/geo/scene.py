"""A scene to map: one raster file, or a folder of single-band files, read one window at a time.

A folder holds one file per band, the Sentinel-2 / BigEarthNet layout (`..._B02.tif`, `..._B8A.tif`, any of
.tif, .tiff, .jp2): each band is named by the text after the last `_` of its file name, bands are numbered in
file-name order, and all are read on the grid of the finest band (the smallest pixels), coarser bands
resampled to it bilinearly by GDAL's warped VRT as each window is read. A file's bands are named by their
descriptions.

Every read is a window (`Scene.read`), optionally resampled to another shape: memory follows the tile, never
the scene. `open_scene` reads headers only.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skyeye.geo.georef import Georeference
from skyeye.geotiff import RASTER_SUFFIXES, RasterError

if TYPE_CHECKING:
    from rasterio.enums import Resampling
    from rasterio.windows import Window


@dataclass(frozen=True)
class SceneBand:
    """One band of a scene: its 1-based number, name (description or file band name), colour, data type."""

    number: int
    name: str | None
    colour: str  # GDAL colour interpretation: "red", "gray", "undefined", ...
    dtype: str


class Scene:
    """An open scene; use as a context manager (or call `close`) to release its files."""

    def __init__(self, path: Path, layout: str, stack: ExitStack, grid, sources: list[tuple[object, int]],
                 bands: list[SceneBand], has_overviews: bool = False) -> None:  # fmt: skip
        self.path = path
        self.has_overviews = has_overviews  # reduced-resolution copies GDAL reads decimated windows from
        self.layout = layout  # e.g. "4-band uint16" or "12 single-band files on the 10 m grid of B02"
        self.width, self.height = grid.width, grid.height
        self.georeference = Georeference.of(grid)
        self.bands = bands
        self._stack = stack
        self._sources = sources  # per band: (dataset or warped VRT on the scene grid, its band number)

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def pixel_size_m(self) -> tuple[float, float]:
        """Ground size of a pixel along x and y in metres; ValueError when the CRS is not in metres or absent."""
        georef = self.georeference
        if georef.crs is None or georef.transform is None:
            raise ValueError(f"{self.path}: no ground sample distance: {georef.how}")
        if not georef.crs.is_projected:
            raise ValueError(f"{self.path}: its CRS is not projected (degrees), so a GSD in metres does not apply")
        _, metres = georef.crs.linear_units_factor
        a, b, _, d, e, _ = list(georef.transform)[:6]
        return math.hypot(a, d) * metres, math.hypot(b, e) * metres

    def read(self, numbers: Sequence[int], window: Window, out_shape: tuple[int, int] | None = None,
             resampling: Resampling | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Bands `numbers` (1-based) of `window`, resampled to `out_shape` (height, width) when given.

        Returns the values [bands, height, width] and where every one of those bands is valid [height, width]:
        not nodata, not masked, inside the band's footprint.
        """
        from rasterio.enums import Resampling

        shape = out_shape or (int(window.height), int(window.width))
        how = resampling if resampling is not None else Resampling.nearest
        dtype = np.result_type(*(self.bands[n - 1].dtype for n in numbers))
        values = np.empty((len(numbers), *shape), dtype=dtype)
        valid = np.ones(shape, dtype=bool)
        for row, number in enumerate(numbers):
            dataset, band = self._sources[number - 1]
            values[row] = dataset.read(band, window=window, out_shape=shape, resampling=how)
            valid &= dataset.read_masks(band, window=window, out_shape=shape, resampling=Resampling.nearest) != 0
        return values, valid


def open_scene(path: str | os.PathLike[str]) -> Scene:
    """Open a raster file or a folder of single-band raster files; RasterError naming the file when unusable."""
    import rasterio

    path = Path(path)
    if not path.exists():
        raise RasterError(f"{path}: no such file or folder")
    stack = ExitStack()
    try:
        with warnings.catch_warnings():
            # An ungeoreferenced raster is fine: it is mapped in pixel coordinates, and the report says so.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            if path.is_dir():
                return _open_folder(path, stack)
            dataset = stack.enter_context(rasterio.open(path))
    except rasterio.errors.RasterioError as e:
        stack.close()
        raise RasterError(f"{path}: cannot be read as a raster ({e.__cause__ or e})") from e
    except BaseException:
        stack.close()
        raise
    bands = [
        SceneBand(number, name or None, colour.name, dtype)
        for number, (name, colour, dtype) in enumerate(
            zip(dataset.descriptions, dataset.colorinterp, dataset.dtypes, strict=True), 1
        )
    ]
    layout = f"{dataset.count}-band {'/'.join(dict.fromkeys(dataset.dtypes))}"
    sources = [(dataset, n) for n in range(1, dataset.count + 1)]
    return Scene(path, layout, stack, dataset, sources, bands, has_overviews=bool(dataset.overviews(1)))


def _open_folder(folder: Path, stack: ExitStack) -> Scene:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    if not files:
        raise RasterError(f"{folder}: a folder with no raster file ({', '.join(RASTER_SUFFIXES)}) in it")
    datasets = []
    for file in files:
        try:
            dataset = stack.enter_context(rasterio.open(file))
        except rasterio.errors.RasterioError as e:
            raise RasterError(f"{file}: cannot be read as a raster ({e.__cause__ or e})") from e
        if dataset.count != 1:
            raise RasterError(f"{file}: has {dataset.count} bands; a band folder needs one band per file")
        if datasets and dataset.crs != datasets[0].crs:
            raise RasterError(f"{file}: its CRS differs from {files[0].name}'s; a band folder needs one CRS")
        datasets.append(dataset)
    finest = min(datasets, key=lambda d: abs(d.transform.determinant))
    sources = []
    for dataset in datasets:
        if (dataset.transform, dataset.width, dataset.height) == (finest.transform, finest.width, finest.height):
            sources.append((dataset, 1))
            continue
        vrt = WarpedVRT(dataset, crs=finest.crs, transform=finest.transform, width=finest.width,
                        height=finest.height, resampling=Resampling.bilinear)  # fmt: skip
        sources.append((stack.enter_context(vrt), 1))
    names = [file.stem.rsplit("_", 1)[-1] for file in files]
    bands = [
        SceneBand(number, name, dataset.colorinterp[0].name, dataset.dtypes[0])
        for number, (name, dataset) in enumerate(zip(names, datasets, strict=True), 1)
    ]
    grid = f"{finest.width} x {finest.height} grid of {names[datasets.index(finest)]}"
    layout = f"{len(files)} single-band files, coarser ones resampled bilinearly to the {grid}"
    return Scene(folder, layout, stack, finest, sources, bands)
