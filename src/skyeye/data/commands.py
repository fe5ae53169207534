"""The `skyeye data` commands: build a recipe, synthesize scenes, show records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from skyeye.data.build import Builder, claim_output
from skyeye.data.recipe import BUNDLED_RECIPES, Recipe, bundled_recipes
from skyeye.data.report import format_table
from skyeye.data.shards import iter_records

SYNTH_TASKS = ["caption", "vqa", "grounding", "identify", "detection", "conversation"]


def recipe_path(name_or_path: str) -> Path:
    """A recipe file, or the name of one bundled under configs/data/ (e.g. `skyeye-968k`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = BUNDLED_RECIPES / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(
        f"{name_or_path}: no such recipe file, and no bundled recipe of that name ({', '.join(bundled_recipes())})"
    )


def build(recipe: str, root: Path, out: Path, progress: bool = True, overwrite: bool = False) -> dict:
    stats = Builder(Recipe.from_yaml(recipe_path(recipe)), root, out, progress, overwrite).run()
    print(format_table(stats))
    print(f"wrote {out}/shards, {out}/stats.json and {out}/rejects.jsonl", file=sys.stderr)
    return stats


def synth(n: int, out: Path, seed: int = 0, size: int = 256, splits: tuple[str, ...] = ("train",),
          progress: bool = True, overwrite: bool = False) -> dict:  # fmt: skip
    """Render n scenes per split into `out` with their records; `out` must not hold an earlier build or scenes."""
    from skyeye.data.synth import rendered_images

    out = Path(out)
    claim_output(out, overwrite, rendered_images(out))
    out.mkdir(parents=True, exist_ok=True)  # the synthetic source's folder: it must exist to be found
    recipe = Recipe.from_dict(
        {"name": "synthetic", "seed": seed, "sources": [{
            "name": "synthetic", "adapter": "synthetic", "path": ".", "splits": list(splits), "tasks": SYNTH_TASKS,
            "options": {"n": n, "seed": seed, "size": size},
        }]},
        "synth",
    )  # fmt: skip
    stats = Builder(recipe, out, out, progress, overwrite).run()
    print(format_table(stats))
    return stats


def show(folder: Path, count: int = 3, record_id: str | None = None, png: Path | None = None,
         root: Path | None = None) -> None:  # fmt: skip
    shown = 0
    for record in iter_records(folder):
        if record_id is not None and record.id != record_id:
            continue
        print(json.dumps({"id": record.id, "task": record.task, "images": record.images, "turns": record.turns},
                         ensure_ascii=False, indent=1))  # fmt: skip
        shown += 1
        if png is not None:
            _render(record, _root_of(folder, root), png)
            print(f"drew {record.id} to {png}", file=sys.stderr)
            return
        if shown >= count:
            return
    if record_id is not None and not shown:
        raise ValueError(f"{folder}: no record with id {record_id!r}")


def _root_of(folder: Path, root: Path | None) -> Path:
    if root is not None:
        return root
    stats = Path(folder) / "stats.json"
    if stats.is_file():
        return Path(json.loads(stats.read_text())["root"])
    raise ValueError(f"{folder}: no stats.json to tell the data root; pass --root")


def _render(record, root: Path, png: Path) -> None:
    from skyeye.boxes import find_boxes
    from skyeye.draw import draw_boxes
    from skyeye.images import load_image

    image = load_image(root / record.images[0]).image
    boxes = []
    for turn in record.turns:
        boxes += find_boxes(turn["user"] + " " + turn["assistant"], *image.size)
    draw_boxes(image, boxes).save(png)
