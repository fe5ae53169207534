"""The data recipe: which native sources to read, where, which splits and tasks, and how much of each.

    name: skyeye-968k
    seed: 0
    sources:
      - name: ucm-captions          # record `source`, unique in the recipe
        adapter: karpathy           # an adapter registered in skyeye.data.sources
        path: UCM_captions          # folder relative to the data root
        splits: [train]
        tasks: [caption]            # records to make from each example (see skyeye.data.instructions)
        options: {images: imgs}     # adapter options
        sample: {fraction: 1.0, limit: null}   # keep a seeded fraction, and at most `limit` per split
        paper: {caption: 8400}      # the paper's record count, shown beside ours
        follow_ups: [rsivqa-ucm]    # sources of this recipe whose questions about the same image (same path and
                                    # split) join this source's conversations as follow-up turns

Unknown keys are errors naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from skyeye.data.record import TASKS

BUNDLED_RECIPES = Path(str(resources.files("skyeye") / "configs" / "data"))


def bundled_recipes() -> list[str]:
    """The names of the recipes shipped under configs/data/ (what `skyeye data build NAME` accepts)."""
    return sorted(path.stem for path in BUNDLED_RECIPES.glob("*.yaml"))


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


@dataclass
class SourceSpec:
    name: str
    adapter: str
    path: str
    splits: list[str]
    tasks: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, int] = field(default_factory=dict)
    follow_ups: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return float(self.sample.get("fraction", 1.0))

    @property
    def limit(self) -> int | None:
        return self.sample.get("limit")


@dataclass
class Recipe:
    name: str
    sources: list[SourceSpec]
    seed: int = 0
    records_per_shard: int = 50_000

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise RecipeError(f"{path}: cannot read the recipe: {err}") from err
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, origin: str) -> Recipe:
        from skyeye.data.sources import ADAPTERS
        from skyeye.data.sources.base import ADAPTER_OPTIONS

        _check_keys(data, {"name", "sources", "seed", "records_per_shard"}, {"name", "sources"}, origin)
        sources, names = [], set()
        for number, entry in enumerate(data["sources"] or []):
            where = f"{origin}: sources[{number}]"
            _check_keys(
                entry, set(SourceSpec.__dataclass_fields__), {"name", "adapter", "path", "splits", "tasks"}, where
            )
            spec = SourceSpec(**entry)
            if spec.name in names:
                raise RecipeError(f"{where}: source name {spec.name!r} used twice")
            names.add(spec.name)
            if spec.adapter not in ADAPTERS:
                raise RecipeError(f"{where}: unknown adapter {spec.adapter!r}; known: {', '.join(sorted(ADAPTERS))}")
            _check_keys(spec.options, set(ADAPTER_OPTIONS[spec.adapter]), set(), f"{where}.options ({spec.adapter})")
            bad_tasks = sorted(set(spec.tasks) - set(TASKS))
            if bad_tasks or not spec.tasks:
                raise RecipeError(f"{where}: tasks {bad_tasks or spec.tasks} not among {list(TASKS)}")
            _check_keys(spec.sample, {"fraction", "limit"}, set(), f"{where}.sample")
            if not 0 < spec.fraction <= 1 or (spec.limit is not None and int(spec.limit) < 0):
                raise RecipeError(f"{where}.sample: fraction must be in (0, 1] and limit >= 0")
            sources.append(spec)
        if not sources:
            raise RecipeError(f"{origin}: the recipe lists no sources")
        for number, spec in enumerate(sources):
            where = f"{origin}: sources[{number}].follow_ups"
            unknown = sorted(set(spec.follow_ups) - names)
            if unknown or spec.name in spec.follow_ups:
                raise RecipeError(f"{where}: {unknown or [spec.name]} must name other sources of this recipe")
            if spec.follow_ups and "conversation" not in spec.tasks:
                raise RecipeError(f"{where}: follow-up questions join conversations; add `conversation` to tasks")
        return cls(data["name"], sources, int(data.get("seed", 0)), int(data.get("records_per_shard", 50_000)))


def _check_keys(data: Any, known: set[str], required: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: must be a mapping")
    unknown, missing = sorted(set(data) - known), sorted(required - set(data))
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if missing:
        raise RecipeError(f"{where}: missing field(s) {', '.join(missing)}")
