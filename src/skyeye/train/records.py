"""The training records of a config, indexed by (shard, byte offset) so that a 968k-record mixture costs
a few arrays of memory, not a million dicts; each record is read back from its shard when it is used."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyeye.data.record import Record
from skyeye.data.shards import shard_files
from skyeye.settings import ConfigError
from skyeye.train.config import DataSpec

# Rough tokens per character of the bundled BPE and of LLaMA's vocabulary; only used to group similar lengths.
TOKENS_PER_CHAR = 0.3


@dataclass
class Selection:
    """What one data spec contributed, for the run's log."""

    records: str
    root: Path
    selected: int
    by_task: Counter


class RecordIndex:
    def __init__(self, specs: list[DataSpec], image_tokens: int, base: Path = Path(".")):
        self.files: list[Path] = []
        self.roots: list[Path] = []
        offsets, file_ids, spec_ids, lengths = [], [], [], []
        self.selections: list[Selection] = []
        for number, spec in enumerate(specs):
            root = _root_of(spec, base, f"data[{number}]")
            self.roots.append(root)
            by_task: Counter = Counter()
            for file in shard_files(base / spec.records):
                file_id = len(self.files)
                self.files.append(file)
                for offset, data in scan(file):
                    if not selects(spec, data):
                        continue
                    chars = sum(len(t["user"]) + len(t["assistant"]) for t in data["turns"])
                    offsets.append(offset)
                    file_ids.append(file_id)
                    spec_ids.append(number)
                    lengths.append(int(chars * TOKENS_PER_CHAR) + image_tokens * len(data["images"]))
                    by_task[data["task"]] += 1
            selected = sum(by_task.values())
            if not selected:
                raise ConfigError(
                    f"data[{number}]: {spec.records} has no records of splits {spec.splits}"
                    + (f" and tasks {spec.tasks}" if spec.tasks else "")
                    + (f" and sources {spec.sources}" if spec.sources else "")
                )
            self.selections.append(Selection(spec.records, root, selected, by_task))
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.file_ids = np.asarray(file_ids, dtype=np.int32)
        self.spec_ids = np.asarray(spec_ids, dtype=np.int32)
        self.lengths = np.asarray(lengths, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, index: int) -> tuple[Record, Path]:
        """The record at `index` and the data root its image paths are relative to."""
        file = self.files[self.file_ids[index]]
        with file.open("rb") as handle:
            handle.seek(int(self.offsets[index]))
            line = handle.readline().decode("utf-8")
        return Record.from_json(line, where=f"{file}@{self.offsets[index]}"), self.roots[self.spec_ids[index]]


def selects(spec: DataSpec, data: dict) -> bool:
    return (
        data["split"] in spec.splits
        and (not spec.tasks or data["task"] in spec.tasks)
        and (not spec.sources or data["source"] in spec.sources)
    )


def scan(file: Path):
    with file.open("rb") as handle:
        offset = 0
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield offset, json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{file}:{number}: not valid JSON: {err}") from err
            offset += len(line)


def _root_of(spec: DataSpec, base: Path, where: str) -> Path:
    if spec.root is not None:
        return base / spec.root
    stats = base / spec.records / "stats.json"
    if stats.is_file():
        return Path(json.loads(stats.read_text())["root"])
    raise ConfigError(f"{where}: no root given and {stats} does not exist to tell the data root")
