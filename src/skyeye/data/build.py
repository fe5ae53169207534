"""`skyeye data build`: a recipe + a data root → record shards, `stats.json`, `rejects.jsonl` and a table.

Accounting: for every source, split and task, each unit read is written, rejected (with a reason, one line in
`rejects.jsonl` naming the tasks it counts against) or sampled out by the recipe, so `written + rejected +
sampled_out = read`. A unit is one native item (a caption, a question, an expression, an image's objects), except
for conversations, whose unit is the image: the consecutive items whose keys share the part before `#` (an image's
captions, `1.jpg#0`, `1.jpg#1`, ...) make one conversation, written or rejected once, whatever became of each
caption; a source's `follow_ups` add the questions other sources ask about the same image to its conversations
(those questions are counted by their own source). Adapter-level rejects (an unreadable line, a missing or damaged
image) count against every task of the source. Every image is loaded whole once per build (`ImageCheck`), so a
truncated one is a reject here rather than a crash in training.

A source whose folder is missing is reported and skipped; a recipe none of whose sources is on disk is an
error. The output folder must not hold a previous build (its shards would mix with the new ones) unless
`overwrite`, which removes that build first.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from skyeye.data.instructions import make_record
from skyeye.data.recipe import Recipe, SourceSpec
from skyeye.data.shards import SHARD_DIR, ShardWriter
from skyeye.data.sources import ADAPTERS
from skyeye.data.sources.base import Example, ImageCheck, Reject, SourceContext

BUILD_OUTPUTS = (SHARD_DIR, "stats.json", "rejects.jsonl")


@dataclass
class TaskCount:
    read: int = 0
    written: int = 0
    sampled_out: int = 0
    rejected: Counter = field(default_factory=Counter)
    written_by_split: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "read": self.read,
            "written": self.written,
            "sampled_out": self.sampled_out,
            "rejected": dict(self.rejected.most_common()),
            "written_by_split": dict(self.written_by_split),
        }


@dataclass
class SourceReport:
    name: str
    path: str
    status: str = "built"  # or "missing"
    tasks: dict[str, TaskCount] = field(default_factory=dict)
    paper: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"path": self.path, "status": self.status, "paper": self.paper,
                "tasks": {t: c.to_dict() for t, c in self.tasks.items()}}  # fmt: skip


def image_key(key: str) -> str:
    """The image a unit's key belongs to: `1.jpg#3` (a caption of 1.jpg) → `1.jpg`; keys without `#` stand alone."""
    image, mark, _ = key.rpartition("#")
    return image if mark and image else key


def _caption_group(group: list[Example]) -> Example:
    first = group[0]
    captions = [e.fields["caption"] for e in group]
    return Example(first.source, first.split, image_key(first.key), "regions", first.images, first.image_size,
                   {"objects": [], "captions": captions}, first.meta)  # fmt: skip


def _questions_by_image(builder: Builder, spec: SourceSpec, split: str) -> dict[str, list[dict]]:
    """The question-answer pairs of `spec`'s `vqa` examples in `split`, by image path (their rejects and other
    kinds of example are accounted by that source's own build)."""
    if split not in spec.splits or not (builder.root / spec.path).exists():
        return {}
    context = SourceContext(builder.root, spec.path, spec.name, split, dict(spec.options), builder.images)
    questions: dict[str, list[dict]] = {}
    for item in ADAPTERS[spec.adapter](context):
        if isinstance(item, Example) and item.kind == "vqa" and len(item.images) == 1:
            asked = {"question": item.fields["question"], "answer": item.fields["answer"]}
            questions.setdefault(item.images[0], []).append(asked)
    return questions


def claim_output(out: Path, overwrite: bool, also: list[Path] | tuple[Path, ...] = ()) -> None:
    """Make sure `out` holds no earlier build (nor the files in `also`): refuse, or remove them when `overwrite`.

    Records of two builds must never mix: a rerun with another recipe or size would leave the old shards (and
    images) beside the new ones, and training reads every shard of the folder.
    """
    found = [out / name for name in BUILD_OUTPUTS if (out / name).exists()] + [p for p in also if p.exists()]
    if not found:
        return
    if not overwrite:
        names = ", ".join(sorted({p.relative_to(out).parts[0] for p in found}))
        raise FileExistsError(
            f"{out}: already holds a previous build ({names}); pass --overwrite to replace it, or choose another --out"
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


class Builder:
    def __init__(self, recipe: Recipe, root: Path, out: Path, progress: bool = True, overwrite: bool = False):
        self.recipe, self.root, self.out, self.progress = recipe, Path(root), Path(out), progress
        self.overwrite = overwrite
        self.images = ImageCheck()

    def run(self) -> dict:
        started = time.perf_counter()
        self._check_sources()
        claim_output(self.out, self.overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        reports = []
        with (
            ShardWriter(self.out, self.recipe.records_per_shard) as writer,
            (self.out / "rejects.jsonl").open("w", encoding="utf-8") as rejects,
        ):
            for spec in self.recipe.sources:
                reports.append(_SourceBuild(self, spec, writer, rejects).run())
        seconds = time.perf_counter() - started
        written = sum(c.written for r in reports for c in r.tasks.values())
        stats = {
            "recipe": self.recipe.name,
            "root": str(self.root.resolve()),
            "seconds": round(seconds, 3),
            "records_written": written,
            "records_per_second": round(written / seconds, 1) if seconds else None,
            "sources": {r.name: r.to_dict() for r in reports},
        }
        (self.out / "stats.json").write_text(json.dumps(stats, indent=2))
        return stats

    def spec(self, name: str) -> SourceSpec:
        return next(spec for spec in self.recipe.sources if spec.name == name)

    def _check_sources(self) -> None:
        if any((self.root / spec.path).exists() for spec in self.recipe.sources):
            return
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such data root (recipe {self.recipe.name})")
        looked = ", ".join(f"{spec.name} ({self.root / spec.path})" for spec in self.recipe.sources)
        raise FileNotFoundError(
            f"recipe {self.recipe.name}: none of its sources is under {self.root}; looked for {looked}"
        )


class _SourceBuild:
    """Reads one source split by split and fans every example out to the source's tasks."""

    def __init__(self, builder: Builder, spec: SourceSpec, writer: ShardWriter, rejects):
        self.builder, self.spec, self.writer, self.rejects = builder, spec, writer, rejects
        self.report = SourceReport(spec.name, spec.path, paper=spec.paper)
        self.counts = {task: self.report.tasks.setdefault(task, TaskCount()) for task in spec.tasks}
        self.per_item = [task for task in spec.tasks if task != "conversation"]  # the conversation's unit is the image
        self.kept: Counter = Counter()

    def run(self) -> SourceReport:
        root = self.builder.root
        if not (root / self.spec.path).exists():
            self.report.status = "missing"
            return self.report
        for split in self.spec.splits:
            context = SourceContext(root, self.spec.path, self.spec.name, split, dict(self.spec.options),
                                    self.builder.images)  # fmt: skip
            items = ADAPTERS[self.spec.adapter](context)
            if self.builder.progress:
                from tqdm import tqdm

                items = tqdm(items, desc=f"{self.spec.name}/{split}", unit=" items", leave=False, disable=None)
            self._consume(split, items, self._follow_ups(split))
        return self.report

    def _follow_ups(self, split: str) -> dict[str, list[dict]]:
        """The questions the source's `follow_ups` ask in `split`, by image path."""
        questions: dict[str, list[dict]] = {}
        for name in self.spec.follow_ups:
            for image, asked in _questions_by_image(self.builder, self.builder.spec(name), split).items():
                questions.setdefault(image, []).extend(asked)
        return questions

    def _consume(self, split: str, items: Iterable[Example | Reject], follow_ups: dict[str, list[dict]]) -> None:
        per_image = "conversation" in self.spec.tasks
        image: list[Example | Reject] = []  # the items about one image, for its conversation
        for item in items:
            if per_image:
                if image and image_key(item.key) != image_key(image[0].key):
                    self._converse(image, split, follow_ups)
                    image = []
                image.append(item)
            if isinstance(item, Reject):
                for task in self.per_item:
                    self.counts[task].read += 1
                    self.counts[task].rejected[item.reason] += 1
                if not per_image:
                    self._log_reject(item, self.per_item)
                continue
            for task in self.per_item:
                self._make(item, task, split)
        if image:
            self._converse(image, split, follow_ups)

    def _converse(self, items: list[Example | Reject], split: str, follow_ups: dict[str, list[dict]]) -> None:
        """One conversation unit: an image's captions grouped, or each example that already is a whole image.

        The image's rejects are logged here, the first one also against the conversation when nothing about the
        image was usable."""
        examples = [item for item in items if isinstance(item, Example)]
        rejects = [item for item in items if isinstance(item, Reject)]
        for number, reject in enumerate(rejects):
            tasks = self.per_item + (["conversation"] if not examples and number == 0 else [])
            if tasks:
                self._log_reject(reject, tasks)
        if not examples:
            count = self.counts["conversation"]
            count.read += 1
            count.rejected[rejects[0].reason] += 1
            return
        if all(example.kind == "caption" for example in examples):
            examples = [_caption_group(examples)]
        for example in examples:
            questions = follow_ups.get(example.images[0]) if len(example.images) == 1 else None
            if questions:
                example = replace(example, fields={**example.fields, "questions": questions})
            self._make(example, "conversation", split)

    def _make(self, example: Example, task: str, split: str) -> None:
        count = self.counts[task]
        count.read += 1
        if not self._sampled(example, task, split):
            count.sampled_out += 1
            return
        result = make_record(example, task, self.builder.recipe.seed)
        if isinstance(result, Reject):
            count.rejected[result.reason] += 1
            self._log_reject(result, [task])
            return
        self.writer.write(f"{self.spec.name}-{split}", result)
        count.written += 1
        count.written_by_split[split] += 1

    def _sampled(self, example: Example, task: str, split: str) -> bool:
        spec = self.spec
        if (
            spec.fraction < 1
            and random.Random(f"{self.builder.recipe.seed}:{example.source}/{split}/{example.key}").random()
            >= spec.fraction
        ):
            return False
        if spec.limit is not None and self.kept[task, split] >= spec.limit:
            return False
        self.kept[task, split] += 1
        return True

    def _log_reject(self, reject: Reject, tasks: list[str]) -> None:
        line = {"source": reject.source, "split": reject.split, "tasks": tasks, "key": reject.key,
                "reason": reject.reason, "detail": reject.detail}  # fmt: skip
        self.rejects.write(json.dumps(line, ensure_ascii=False) + "\n")
