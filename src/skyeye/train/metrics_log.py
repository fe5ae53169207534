"""`metrics.jsonl`: one JSON line per logged step, appended as a run goes.

A run killed after its last checkpoint has logged steps that the resumed run learns and logs again, and a
kill mid-write leaves a truncated last line; so a (resumed) run first cuts the log back to the step it
starts from, and readers leave out a truncated last line, saying so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from skyeye import atomic, jsonl

METRICS_FILE = "metrics.jsonl"


def read_log(path: Path) -> tuple[list[dict], bool]:
    """The logged rows, and whether a truncated last line was left out; any other bad line is an error."""
    saved = jsonl.read(Path(path))
    return saved.rows, saved.cut_line is not None


def open_log(out: Path, step: int):
    """The run's log, open for appending, holding the rows of steps 1..`step` only (those a run resuming from
    a checkpoint at `step` has already learned); what it drops it says."""
    path = Path(out) / METRICS_FILE
    if path.is_file():
        rows, torn = read_log(path)
        kept = [row for row in rows if row.get("step", 0) <= step]
        if torn or len(kept) < len(rows):
            atomic.write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
            truncated = " and a truncated last line" if torn else ""
            print(f"{path}: dropped {len(rows) - len(kept)} rows after step {step}{truncated} (logged after the "
                  "checkpoint this run starts from)", file=sys.stderr)  # fmt: skip
    jsonl.settle(path)
    return path.open("a")
