"""The answers of a mapping run, tile by tile, kept in a folder beside the layer so that a killed run resumes.

`LAYER.parts/` holds `run.json` (what produced the run: scenes, bands, stretch, tiles, task, question, model,
decoding) and one `tiles-<process>.jsonl` per process, a line per tile once its batch is answered:
`{"scene": 0, "tile": 17, "answer": "..."}`, or `"skipped": "nodata"` for a tile with no valid pixel. A
rerun reads every `tiles-*.jsonl`, asks only the tiles not in them, and refuses to resume a run made with
other settings. A last line cut short by a kill is dropped, counted, and its tile asked again. The folder is
removed once the layer is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from skyeye import jsonl

RUN_FILE = "run.json"


class TileLog:
    def __init__(self, folder: Path | None, process: int = 0) -> None:
        self.folder = folder  # None: rows kept in memory only (no resume)
        self.process = process
        self._memory: dict[tuple[int, int], dict] = {}
        self._handle: IO[str] | None = None
        self.cut_lines = 0  # lines cut short by a kill, dropped when read

    @classmethod
    def beside(cls, layer: Path | None, process: int = 0) -> TileLog:
        return cls(None if layer is None else layer.with_name(layer.name + ".parts"), process)

    def start(self, identity: dict) -> None:
        """Record `identity` for a new run (one process does this), unless a run is already recorded."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        run = self.folder / RUN_FILE
        if not run.exists():
            partial = run.with_suffix(".writing")
            partial.write_text(json.dumps(identity, indent=1, ensure_ascii=False))
            partial.replace(run)

    def check(self, identity: dict) -> None:
        """Raise ValueError when the recorded run was made with other settings than `identity`."""
        if self.folder is None:
            return
        recorded = json.loads((self.folder / RUN_FILE).read_text())
        differences = [key for key in sorted(set(recorded) | set(identity)) if recorded.get(key) != identity.get(key)]
        if differences:
            raise ValueError(
                f"{self.folder}: holds a run with other {', '.join(differences)} "
                f"({', '.join(f'{k}={recorded.get(k)!r}' for k in differences)}); "
                "use the same settings to resume it, or delete the folder to start over"
            )

    def read(self) -> dict[tuple[int, int], dict]:
        """Every tile recorded by any process, keyed by (scene, tile)."""
        if self.folder is None:
            return dict(self._memory)
        done: dict[tuple[int, int], dict] = {}
        self.cut_lines = 0
        for path in sorted(self.folder.glob("tiles-*.jsonl")):
            saved = jsonl.read(path, "a tile (a JSON object with scene and tile)", ("scene", "tile"))
            self.cut_lines += saved.cut_line is not None
            done.update(((row["scene"], row["tile"]), row) for row in saved.rows)
        return done

    def append(self, rows: list[dict]) -> None:
        if self.folder is None:
            self._memory.update(((row["scene"], row["tile"]), row) for row in rows)
            return
        if not rows:
            return
        if self._handle is None:
            path = self.folder / f"tiles-{self.process}.jsonl"
            jsonl.settle(path)
            self._handle = path.open("a", encoding="utf-8")
        self._handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        self.close()
        if self.folder is None or not self.folder.exists():
            return
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()
