"""JSON-lines files that a run appends to and a kill may cut short: eval predictions, map tile logs, metrics.

A kill mid-write leaves the last line unfinished, without its newline. `read` leaves out such a line when it
is not valid JSON and gives its number, so that the caller can say so and redo its item; a last line cut
just before its newline still parses and is kept. Before appending, `settle` removes an unfinished last
line and ends a complete one with its newline, so that every new row starts a line of its own. A bad line
anywhere else is an error naming it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class JsonLines:
    rows: list[dict] = field(default_factory=list)
    cut_line: int | None = None  # the number of an unfinished last line (a run killed mid-write), left out


def read(path: Path, what: str = "a JSON object", keys: tuple[str, ...] = ()) -> JsonLines:
    """The rows of `path` (none when it does not exist); each must be a JSON object holding `keys`."""
    result = JsonLines()
    if not path.is_file():
        return result
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:  # JSONDecodeError, or UnicodeDecodeError for a character cut in two
                if line.endswith(b"\n"):  # a kill cuts only the end of the file
                    raise ValueError(f"{path}:{number}: not valid JSON ({err}); delete the line to resume") from err
                result.cut_line = number
                continue
            if not isinstance(row, dict) or not all(key in row for key in keys):
                raise ValueError(f"{path}:{number}: not {what}")
            result.rows.append(row)
    return result


def settle(path: Path) -> bool:
    """Make `path` end where a new line may start; True when an unfinished last line was removed."""
    if not path.is_file():
        return False
    with path.open("rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        start = _last_line_start(handle, end)
        handle.seek(start)
        last = handle.read(end - start)
        if not last.strip():
            return False
        try:
            json.loads(last)
        except ValueError:
            handle.truncate(start)
            return True
        handle.seek(end)
        handle.write(b"\n")
        return False


def _last_line_start(handle, end: int) -> int:
    """The offset just after the file's last newline (0 when it has none)."""
    position = end
    while position > 0:
        step = min(1 << 16, position)
        position -= step
        handle.seek(position)
        newline = handle.read(step).rfind(b"\n")
        if newline >= 0:
            return position + newline + 1
    return 0
