"""Scene classification sources laid out as one folder per class: `{class}/{image}`.

`class_folders` reads UC Merced (`Images/agricultural/agricultural00.tif`), AID (`Airport/airport_1.jpg`),
NWPU-RESISC45 (`airplane/airplane_001.jpg`), EuroSAT RGB (`2750/AnnualCrop/AnnualCrop_1.jpg`), WHU-RS19,
PatternNet (`images/airplane/airplane001.jpg`) and the like. The unit is one file in a class folder; it
becomes an Example {"label": readable class, "classes": all readable class names, sorted} or a Reject
("not an image" for a file whose extension is not an image's, "unreadable image", "missing image" for a
listed file that is absent). Hidden files (".DS_Store") and files outside class folders are not units.

Options:
- `images`: the subfolder holding the class folders (default: the source folder itself).
- `splits`: {split: listing file}, paths relative to the source folder; each line a path relative to
  `images` (`agricultural/agricultural00.tif`) or a bare file name whose class folder is the longest class
  name it starts with followed by "_" (EuroSAT's `AnnualCrop_1.jpg`). Blank lines are skipped.
- otherwise a deterministic stratified split: within each class the file names are ordered by
  sha1("{seed}:{class}:{name}") and cut at the cumulative `split_fractions` (default {"train": 0.8,
  "test": 0.2}, rounded per class, the last split takes the rest); `seed` (default 0). The assignment of
  a file depends only on its class's file names, never on the listing order; split "all" takes every file.
- `extensions`: image extensions (default .jpg .jpeg .png .tif .tiff .bmp), case-insensitive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from skyeye.data.sources.base import Example, Reject, SourceContext, register
from skyeye.data.sources.class_names import readable

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DEFAULT_FRACTIONS = {"train": 0.8, "test": 0.2}


def split_members(names: Iterable[str], split: str, fractions: dict[str, float] | None = None, seed="0") -> set[str]:
    """The names of one group (a class, a dataset) that fall in `split` under the deterministic hashed split."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    names = sorted(set(names))
    if split == "all":
        return set(names)
    if split not in fractions:
        raise ValueError(f"split {split!r} is not in split_fractions {fractions}")
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split_fractions must be non-negative with a positive sum: {fractions}")
    order = sorted(names, key=lambda n: hashlib.sha1(f"{seed}:{n}".encode()).hexdigest())
    total, cumulative, start = sum(fractions.values()), 0.0, 0
    for position, (name, fraction) in enumerate(fractions.items()):
        cumulative += fraction
        end = len(order) if position == len(fractions) - 1 else round(cumulative / total * len(order))
        if name == split:
            return set(order[start:end])
        start = end
    return set()  # unreachable: split is in fractions


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _scene(ctx: SourceContext, key: str, path: Path, folder: str, classes: list[str], extensions) -> Example | Reject:
    relative = ctx.rel(path)
    if path.suffix.lower() not in extensions:
        return ctx.reject(key, "not an image", relative)
    size = ctx.image_size(relative)
    if size is None:
        return ctx.reject(key, *ctx.image_problem(relative))
    fields = {"label": readable(folder), "classes": classes}
    return ctx.example(key, "scene", [relative], size, fields, class_folder=folder)


def _listed(ctx: SourceContext, base: Path, listing: Path, folders: list[str]) -> Iterator[tuple | Reject]:
    """(key, class folder, path) per listed line; Rejects for lines that name no class folder."""
    by_length = sorted(folders, key=len, reverse=True)
    with listing.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            text = line.strip().replace("\\", "/")
            if not text:
                continue
            parts = text.split("/")
            if len(parts) == 1:
                folder = next((f for f in by_length if text.startswith(f + "_")), None)
                if folder is None:
                    yield ctx.reject(f"{listing.name}:{number}", "unknown class", text)
                    continue
                parts = [folder, text]
            yield "/".join(parts), parts[0], base.joinpath(*parts)


def split_listing(ctx: SourceContext) -> Path | Reject | None:
    """The file that option `splits` names for this split: None without the option, a Reject when missing."""
    splits = ctx.options.get("splits")
    if not splits:
        return None
    if ctx.split not in splits:
        raise ValueError(f"{ctx.source}: split {ctx.split!r} has no listing in option splits {splits}")
    listing = ctx.path / splits[ctx.split]
    if not listing.is_file():
        return ctx.reject(listing.name, "missing split file", ctx.rel(listing))
    return listing


@register("class_folders", options=("extensions", "images", "seed", "split_fractions", "splits"))
def class_folders(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    base = ctx.path / options["images"] if options.get("images") else ctx.path
    extensions = tuple(f".{e.lower().lstrip('.')}" for e in options.get("extensions", DEFAULT_EXTENSIONS))
    if not base.is_dir():
        yield ctx.reject(base.name, "missing folder", ctx.rel(base))
        return
    folders = sorted(d.name for d in base.iterdir() if d.is_dir() and _visible(d))
    classes = sorted({readable(f) for f in folders})
    listing = split_listing(ctx)
    if isinstance(listing, Reject):
        yield listing
        return
    if listing is not None:
        for item in _listed(ctx, base, listing, folders):
            if isinstance(item, Reject):
                yield item
            elif item[1] not in folders:
                yield ctx.reject(item[0], "unknown class", item[0])
            else:
                yield _scene(ctx, item[0], item[2], item[1], classes, extensions)
        return
    fractions = options.get("split_fractions", DEFAULT_FRACTIONS)
    seed = options.get("seed", 0)
    for folder in folders:
        files = sorted((f for f in (base / folder).iterdir() if _visible(f)), key=lambda f: f.name)
        members = split_members([f.name for f in files], ctx.split, fractions, f"{seed}:{folder}")
        for path in files:
            if path.name in members:
                yield _scene(ctx, f"{folder}/{path.name}", path, folder, classes, extensions)
