"""`skyeye map`: the options in, `map_scenes`, and a plain report out (bands, stretch, coordinates, counts)."""

from __future__ import annotations

from collections.abc import Callable

from skyeye.class_lists import class_list_question
from skyeye.geo.layer import DRIVERS, driver_for
from skyeye.geo.mapper import MapResult, expand_scenes, map_question, map_scenes
from skyeye.geo.stretch import parse_stretch


def run_map(args, load_model: Callable[[], object], model_name: str) -> int:
    """Run `skyeye map` from parsed arguments; `load_model` is called once the options are known to be good."""
    if args.classes is not None:
        if args.task != "scene" or args.question:
            raise ValueError("--classes goes with --task scene and takes the place of --question")
        args.question = class_list_question(args.classes)
    map_question(args.task, args.question)
    driver_for(args.out)
    parse_stretch(args.stretch)
    expand_scenes(args.scenes)
    result = map_scenes(
        load_model(), args.scenes, args.task, args.question, out=args.out, bands=args.bands, stretch=args.stretch,
        tile_size=args.tile_size, overlap=args.overlap, gsd=args.gsd, batch_size=args.batch_size,
        model_name=model_name, progress=not args.no_progress, max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    if result.main:
        print(report(result))
    return 0


def report(result: MapResult) -> str:
    """The plain report of a finished run."""
    r = result.report
    lines = []
    for plan in r.plans:
        grid = f"{len(plan.tiles)} tiles" + (f" resampled {plan.scale[0]:.3g}:1" if plan.scale != (1.0, 1.0) else "")
        lines.append(f"scene {plan.source}: {plan.width} x {plan.height}, {plan.layout}")
        lines.append(f"  {plan.bands.describe()}, {plan.stretch.how}")
        lines.append(f"  {grid}; {plan.georeference.how}")
    asked = r.answered + r.skipped_nodata - r.resumed
    resumed = f", {r.resumed} already answered by an earlier run" if r.resumed else ""
    cut = f" ({r.cut_lines} cut short by a kill, asked again)" if r.cut_lines else ""
    processes = f" by {r.processes} processes" if r.processes > 1 else ""
    lines.append(f"tiles: {r.tiles} ({asked} read now{processes}{resumed}{cut}), {r.answered} answered, "
                 f"{r.skipped_nodata} skipped (no valid pixel)")  # fmt: skip
    if r.task in ("grounding", "detection"):
        merged = r.boxes_found - r.boxes_degenerate - r.features
        lines.append(f"boxes: {r.boxes_found} found, {r.boxes_degenerate} dropped (zero width or height), "
                     f"{merged} merged across tile overlaps and seams")  # fmt: skip
    lines += r.notes
    crs = result.features.crs
    where = "pixel coordinates" if crs is None else f"{crs.to_string()}"
    if crs is not None and DRIVERS[result.layer.suffix.lower()] == "GeoJSON":
        where = "WGS84 longitude / latitude (RFC 7946)"
    lines.append(f"wrote {r.features} features to {result.layer} ({where})")
    return "\n".join(lines)
