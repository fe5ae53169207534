"""Tile answers -> map features.

Per-tile tasks (caption, vqa, scene) give one feature per answered tile: the tile's polygon with its answer, a
map of descriptions. Box tasks (grounding, detection) give one feature per object: the boxes of every tile
are taken to scene pixels, merged across overlaps and seams (`skyeye.geo.merge`), and georeferenced through
all four corners (`skyeye.geo.georef`).

Attributes of every feature: `label` (the box's phrase, else the question; a per-tile answer for per-tile
tasks), `task`, `question`, `answer` (the tile's whole answer), `source` (the scene's file or folder), `tile`
(the tile id, `r<row>c<col>`), `pixel_box` (`x1 y1 x2 y2` in scene pixels), `model`; box tasks add `parts`,
the number of tile boxes merged into the feature.
"""

from __future__ import annotations

from dataclasses import dataclass

from skyeye.boxes import find_boxes
from skyeye.geo.georef import Georeference
from skyeye.geo.merge import TileBox, merge_boxes
from skyeye.geo.tiles import Tile


@dataclass(frozen=True)
class MapTask:
    task: str  # a task name of skyeye.prompts.TASKS
    default_question: str | None  # asked when no question is given; None: a question is required
    boxes: bool  # True: features are boxes; False: features are tiles


MAP_TASKS = {
    "caption": MapTask("caption", "Briefly describe this image.", boxes=False),
    "vqa": MapTask("vqa", None, boxes=False),
    "scene": MapTask("scene", "What is the theme of this picture?", boxes=False),
    "grounding": MapTask("grounding", None, boxes=True),
    "detection": MapTask("detection", None, boxes=True),
}


@dataclass(frozen=True)
class TileAnswer:
    tile: Tile
    answer: str


@dataclass
class SceneFeatures:
    rows: list[dict]  # attributes
    geometries: list  # shapely polygons, in the scene's map (or pixel) coordinates
    boxes_found: int = 0
    boxes_degenerate: int = 0


def scene_features(answers: list[TileAnswer], task: str, question: str, source: str, model: str,
                   georef: Georeference, width: int, height: int) -> SceneFeatures:  # fmt: skip
    """The features of one scene's answered tiles (in tile order)."""
    common = {"task": task, "question": question, "source": source, "model": model}
    if not MAP_TASKS[task].boxes:
        rows = [{"label": a.answer, **common, "answer": a.answer, "tile": a.tile.id,
                 "pixel_box": _box_text(a.tile.box)} for a in answers]  # fmt: skip
        return SceneFeatures(rows, [georef.polygon(a.tile.box) for a in answers])
    found, texts = [], []
    for answer in answers:
        tile = answer.tile
        sx, sy = tile.width / tile.out_width, tile.height / tile.out_height
        for box in find_boxes(answer.answer, tile.out_width, tile.out_height):
            x1, y1, x2, y2 = box.pixels
            scene_box = (tile.x + x1 * sx, tile.y + y1 * sy, tile.x + x2 * sx, tile.y + y2 * sy)
            found.append(TileBox(box.phrase or question, scene_box, tile))
            texts.append(answer.answer)
    merged, degenerate = merge_boxes(found, width, height)
    rows, geometries = [], []
    for obj in merged:
        kept = found[obj.kept]
        rows.append({"label": kept.label, **common, "answer": texts[obj.kept], "tile": kept.tile.id,
                     "pixel_box": _box_text(obj.box), "parts": len(obj.members)})  # fmt: skip
        geometries.append(georef.polygon(obj.box))
    return SceneFeatures(rows, geometries, len(found), degenerate)


def _box_text(box) -> str:
    return " ".join(f"{round(v, 2):g}" for v in box)
