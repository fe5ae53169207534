"""Files and folders that appear whole or not at all, whenever the process is killed.

A folder is written under a `.partial` sibling name, its files are flushed to disk, and it is renamed into
place last; a file is written beside its target and renamed over it. Readers never see a half-written one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PARTIAL = ".partial"


def partial_of(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL)


def begin_folder(final: Path) -> Path:
    """An empty `.partial` sibling of `final` to write into (one left by an earlier crash is discarded)."""
    partial = partial_of(Path(final))
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return partial


def publish_folder(partial: Path) -> Path:
    """Renames a complete `.partial` folder into place, replacing the folder there, and returns its path.

    Files are flushed first, so that a power loss cannot leave the renamed folder with empty files. An
    existing folder is moved aside before the rename and deleted after it, not deleted first: a crash in
    between leaves it whole under `NAME.old`."""
    final = partial.with_name(partial.name.removesuffix(PARTIAL))
    for file in partial.rglob("*"):
        if file.is_file():
            sync(file)
    aside = final.with_name(final.name + ".old")
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        os.replace(final, aside)
    os.replace(partial, final)
    if aside.exists():
        shutil.rmtree(aside)
    return final


def publish_file(partial: Path) -> Path:
    """Renames a complete `.partial` file over its final name and returns that."""
    final = partial.with_name(partial.name.removesuffix(PARTIAL))
    sync(partial)
    os.replace(partial, final)
    return final


def write_text(path: Path, text: str) -> None:
    """Replaces the file at `path` with `text` in one rename."""
    partial = partial_of(Path(path))
    partial.write_text(text)
    publish_file(partial)


def sync(file: Path) -> None:
    with file.open("rb") as handle:
        os.fsync(handle.fileno())
