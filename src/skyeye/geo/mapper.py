"""`map_scenes`: ask a model about every tile of one or many scenes; the answers as map features.

A run:

1. plans each scene from its headers: bands (`skyeye.geo.bands`), one stretch for the whole scene
   (`skyeye.geo.stretch`), the tile grid (`skyeye.geo.tiles`);
2. records what it is (`skyeye.geo.tilelog`) and, when the log beside the layer holds tiles of the same run,
   resumes: only tiles not yet answered are asked;
3. shares those tiles among processes when started by `accelerate launch` or `torchrun` (process i of n takes
   every n-th tile) and, in each process, reads its tiles one window at a time, skips tiles without a valid
   pixel, and asks the model in batches of `batch_size` through `ask_many`, logging each batch's answers;
4. once every process is done, builds the features from the log in scene and tile order (so the layer does
   not depend on how many processes ran or in which order tiles were answered), and the main process writes
   the layer by its extension (`skyeye.geo.layer`).

Memory stays bounded: one batch of tiles is in memory at a time, GDAL's block cache is capped at
`GDAL_CACHE_MB`, and the stretch is computed from a decimated read.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyeye.geo.bands import BandChoice, choose_bands
from skyeye.geo.features import MAP_TASKS, TileAnswer, scene_features
from skyeye.geo.georef import Georeference
from skyeye.geo.scene import open_scene
from skyeye.geo.stretch import SceneStretch, parse_stretch, scene_stretch
from skyeye.geo.tilelog import TileLog
from skyeye.geo.tiles import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, Tile, tile_grid
from skyeye.processes import current_processes

if TYPE_CHECKING:
    import geopandas

GDAL_CACHE_MB = 64


@dataclass
class ScenePlan:
    source: str  # the scene's path as given
    layout: str  # e.g. "4-band uint16"
    width: int
    height: int
    georeference: Georeference
    bands: BandChoice
    stretch: SceneStretch
    tiles: list[Tile]
    scale: tuple[float, float]  # scene pixels per model pixel (1, 1 without --gsd)


@dataclass
class MapReport:
    """What a run did, for people: the counts `skyeye map` prints."""

    plans: list[ScenePlan]
    task: str
    question: str
    tiles: int = 0
    answered: int = 0
    skipped_nodata: int = 0
    resumed: int = 0  # tiles already answered by an earlier, killed run
    cut_lines: int = 0  # log lines cut short by a kill, whose tiles were asked again
    boxes_found: int = 0
    boxes_degenerate: int = 0
    features: int = 0
    processes: int = 1
    notes: list[str] = field(default_factory=list)


@dataclass
class MapResult:
    features: geopandas.GeoDataFrame  # in the first scene's CRS (pixel coordinates when it has none)
    report: MapReport
    layer: Path | None = None  # where the layer was written (by the main process)
    main: bool = True  # False in the other processes of a multi-process run


def expand_scenes(patterns: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Paths as given; a pattern with * ? or [ that names no path as such is expanded as a glob (sorted)."""
    scenes: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if not Path(text).exists() and any(c in text for c in "*?["):
            matches = sorted(glob.glob(text))
            if not matches:
                raise ValueError(f"{text}: no scene matches this pattern")
            scenes += [Path(m) for m in matches]
        else:
            scenes.append(Path(text))
    if not scenes:
        raise ValueError("no scene given")
    return scenes


def map_question(task: str, question: str | None) -> str:
    """The question asked about every tile: `question`, else the task's own; ValueError when it needs one."""
    if task not in MAP_TASKS:
        raise ValueError(f"unknown map task {task!r}; tasks: {', '.join(MAP_TASKS)}")
    question = (question or "").strip() or MAP_TASKS[task].default_question
    if not question:
        raise ValueError(f"--task {task} needs --question (e.g. the object to find, or the question to ask)")
    return question


def map_scenes(
    model,
    scenes: Sequence[str | os.PathLike[str]],
    task: str,
    question: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    bands: str | None = None,
    stretch: str | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    gsd: float | None = None,
    batch_size: int = 8,
    model_name: str | None = None,
    progress: bool = True,
    **generation: Any,
) -> MapResult:
    """Map `scenes` (files, band folders or glob patterns) with `model` and return the features.

    `task` is one of caption, vqa, scene (a feature per tile) or grounding, detection (a feature per object);
    `question` defaults to the task's own where it has one. With `out`, the layer is written there (format by
    extension) and a killed run resumes. `model` needs `ask_many(images, texts, tasks=..., batch_size=...,
    **generation)` returning answers with `.text`.
    """
    import rasterio

    question = map_question(task, question)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    layer = Path(out) if out is not None else None
    if layer is not None:
        from skyeye.geo.layer import driver_for

        driver_for(layer)  # an unknown extension fails now, not after hours of tiles
    paths = expand_scenes(scenes)
    fixed = parse_stretch(stretch)
    processes = current_processes()
    rank, world = processes.index, processes.count
    if world > 1 and layer is None:
        raise ValueError("several processes need --out: they share their answers through the folder beside it")
    model_name = model_name or getattr(getattr(model, "cfg", None), "name", None) or type(model).__name__

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        plans = [_plan(path, bands, fixed, tile_size, overlap, gsd) for path in paths]
        _check_crs(plans)
        identity = {
            "scenes": [str(path.resolve()) for path in paths], "bands": bands or "auto",
            "stretch": list(fixed) if fixed else "2-98 percentile", "tile_size": tile_size, "overlap": overlap,
            "gsd": gsd, "task": task, "question": question, "model": model_name,
            "generation": {k: generation[k] for k in sorted(generation)},
        }  # fmt: skip
        log = TileLog.beside(layer, rank)
        if rank == 0:
            log.start(identity)
        processes.wait()
        log.check(identity)
        done = log.read()
        report = MapReport(plans, task, question, tiles=sum(len(p.tiles) for p in plans), processes=world)
        report.resumed, report.cut_lines = len(done), log.cut_lines
        pending = [(s, t) for s, plan in enumerate(plans) for t in plan.tiles if (s, t.index) not in done]
        try:
            _ask_tiles(model, plans, pending[rank::world], log, task, question, batch_size, progress and rank == 0,
                       generation)  # fmt: skip
        finally:
            log.close()
    processes.wait()
    done = log.read()
    processes.wait()  # every process has read the log before the main process removes it
    features = _features(plans, done, report, task, question, model_name)
    if rank == 0 and layer is not None:
        from skyeye.geo.layer import write_layer

        write_layer(features, layer)
        log.remove()
    return MapResult(features, report, layer, main=rank == 0)


def _plan(path: Path, bands: str | None, fixed, tile_size: int, overlap: int, gsd: float | None) -> ScenePlan:
    with open_scene(path) as scene:
        choice = choose_bands(scene.bands, bands, str(path))
        scale = (1.0, 1.0)
        if gsd is not None:
            if not gsd > 0:
                raise ValueError(f"--gsd must be a positive number of metres per pixel, got {gsd}")
            size_x, size_y = scene.pixel_size_m()
            scale = (gsd / size_x, gsd / size_y)
        tiles = tile_grid(scene.width, scene.height, tile_size, overlap, scale)
        stretch = scene_stretch(scene, choice, fixed)
        return ScenePlan(str(path), scene.layout, scene.width, scene.height, scene.georeference, choice, stretch,
                         tiles, scale)  # fmt: skip


def _check_crs(plans: list[ScenePlan]) -> None:
    with_crs = [p for p in plans if p.georeference.has_crs]
    if with_crs and len(with_crs) != len(plans):
        without = next(p for p in plans if not p.georeference.has_crs)
        raise ValueError(
            f"{without.source}: has no CRS while {with_crs[0].source} has one; one layer cannot mix pixel and map "
            "coordinates: map them separately"
        )


def _ask_tiles(model, plans, mine: list[tuple[int, Tile]], log: TileLog, task: str, question: str,
               batch_size: int, progress: bool, generation: dict) -> None:  # fmt: skip
    """Read, render and ask `mine` in batches; log every tile (answered or skipped) batch by batch."""
    from tqdm import tqdm

    bar = tqdm(total=len(mine), unit="tile", desc="mapping", disable=not progress, dynamic_ncols=True)
    batch: list[tuple[int, Tile, Any]] = []
    skipped: list[dict] = []
    opened: tuple[int, Any] | None = None

    def ask() -> None:
        images = [image for _, _, image in batch]
        answers = model.ask_many(images, [question] * len(batch), tasks=[MAP_TASKS[task].task] * len(batch),
                                 batch_size=batch_size, **generation)  # fmt: skip
        rows = [{"scene": s, "tile": t.index, "answer": a.text} for (s, t, _), a in zip(batch, answers, strict=True)]
        log.append(skipped + rows)
        bar.update(len(batch) + len(skipped))
        batch.clear()
        skipped.clear()

    try:
        for number, tile in mine:
            if opened is None or opened[0] != number:
                if opened is not None:
                    opened[1].close()
                opened = (number, open_scene(plans[number].source))
            image = _read_tile(opened[1], plans[number], tile)
            if image is None:
                skipped.append({"scene": number, "tile": tile.index, "skipped": "nodata"})
            else:
                batch.append((number, tile, image))
            if len(batch) == batch_size:
                ask()
        if batch:
            ask()
        log.append(skipped)
        bar.update(len(skipped))
    finally:
        bar.close()
        if opened is not None:
            opened[1].close()


def _read_tile(scene, plan: ScenePlan, tile: Tile):
    """The tile as the model's input image, or None when none of its pixels is valid."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from skyeye.images import LoadedImage

    scale = max(plan.scale)
    # Shrinking averages the pixels a model pixel covers; enlarging interpolates; same size reads as stored.
    resampling = Resampling.average if scale > 1 else Resampling.bilinear if scale < 1 else Resampling.nearest
    window = Window(tile.x, tile.y, tile.width, tile.height)
    values, valid = scene.read(plan.bands.numbers, window, (tile.out_height, tile.out_width), resampling)
    if not valid.any():
        return None
    image = plan.stretch.render(values, valid)
    return LoadedImage(
        image=image,
        path=f"{plan.source}#{tile.id}",
        original_size=(tile.width, tile.height),
        original_mode=plan.layout,
        rendering=f"{plan.bands.describe()}, {plan.stretch.how}",
    )


def _features(plans, done: dict, report: MapReport, task: str, question: str, model_name: str):
    import geopandas
    import pandas

    frames = []
    target = next((p.georeference.crs for p in plans), None)
    for number, plan in enumerate(plans):
        answers = []
        for tile in plan.tiles:
            row = done.get((number, tile.index))
            if row is None:
                continue
            if "answer" in row:
                answers.append(TileAnswer(tile, row["answer"]))
            else:
                report.skipped_nodata += 1
        report.answered += len(answers)
        found = scene_features(answers, task, question, plan.source, model_name, plan.georeference, plan.width,
                               plan.height)  # fmt: skip
        report.boxes_found += found.boxes_found
        report.boxes_degenerate += found.boxes_degenerate
        frame = geopandas.GeoDataFrame(found.rows, geometry=found.geometries, crs=plan.georeference.crs)
        if target is not None and plan.georeference.crs != target:
            report.notes.append(f"{plan.source}: reprojected from {plan.georeference.crs} to the first scene's CRS")
            frame = frame.to_crs(target)
        frames.append(frame)
    features = geopandas.GeoDataFrame(pandas.concat(frames, ignore_index=True), geometry="geometry", crs=target)
    report.features = len(features)
    return features
