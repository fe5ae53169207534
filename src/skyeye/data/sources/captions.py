"""Remote-sensing image captioning sets in their native layouts: `karpathy`, `precomp` and `nwpu_captions`.

Every caption is one native unit: it becomes one "caption" Example (fields {"caption": str}) or one Reject.
Keys are ``{image_key}#{n}`` (n: the caption's index within its image, from 0) and an image's captions are
yielded one after another, so the build can group them into one conversation per image. A caption whose
image file is not on disk is rejected ("missing image"; this reason wins over the others), one whose image
does not load whole (unidentifiable, truncated or corrupt; the detail says which) "unreadable image", one that
is empty or only whitespace "empty text"; whitespace runs in captions are collapsed. Each image is decoded
once per build (`SourceContext.image_size`).

`karpathy` -- the Karpathy-style ``dataset*.json`` of UCM-Captions, Sydney-Captions and RSICD
(``dataset_rsicd.json``)::

    <folder>/dataset.json   {"images": [{"filename": "1.tif", "imgid": 0, "split": "train", "sentids": [0, ...],
                             "sentences": [{"raw": "A residential area ...", "tokens": [...], "imgid": 0,
                                            "sentid": 0}, ...]}, ...], "dataset": "UCM"}
    <folder>/imgs/1.tif

Options: ``annotations`` (the file's name in the folder; default: the single ``dataset*.json`` there),
``images`` (image subfolder, default ``imgs``). Entries are selected by their ``split``; ``restval`` (the
Karpathy files' "rest of val", used for training by convention) is read as ``train``. The image file name is
taken from ``filename`` as written (never assumed to be ``.tif``: the UCM copy here ships ``N.jpg``). Image
key: the file name. A split no entry has raises ValueError naming the splits the file has.

`precomp` -- the ``*_precomp`` text layout in which RSICD and RSITMD captions circulate::

    <folder>/{split}_filename.txt   image file names, one a line
    <folder>/{split}_caps.txt       captions, one a line
    <folder>/imgs/<file name>

Two line layouts exist and both are real: one file-name line per image, its k captions on k consecutive
lines (RSICD and RSITMD ``train``: 5 caption lines per name), or one file-name line per caption (their
``test``). The layout is inferred from the counts: equal counts map caption i to name i; a caption count
that is k times the name count maps caption i to name i // k. Any other pair of counts rejects every caption
of the split with a reason naming both counts. Options: ``images`` (default ``imgs``),
``captions_per_image`` (k; default: inferred as above, 1 means one name line per caption). The splits are
those whose two files exist (``test`` is the common test split); asking for another raises ValueError
naming the missing file. Image key: the file name. The text files are read whole (a few MB at most).

`nwpu_captions` -- NWPU-Captions' ``dataset_nwpu.json``, a mapping from NWPU-RESISC45 class name to that
class's images::

    <folder>/dataset_nwpu.json   {"airplane": [{"filename": "airplane_001.jpg", "imgid": 0, "split": "train",
                                   "raw": "...", "raw_1": "...", "raw_2": "...", "raw_3": "...", "raw_4": "...",
                                   "sentids": 0, "sentids_1": 1, ...}, ...], "airport": [...], ...}
    <folder>/NWPU-RESISC45/airplane/airplane_001.jpg

The captions of an entry are ``raw``, ``raw_1``, ``raw_2``, ... in that order. Options: ``annotations``
(default ``dataset_nwpu.json``), ``images`` (default ``NWPU-RESISC45`` when that folder exists, else
``imgs``); images are read from ``<images>/<class>/<filename>``. Image key: ``<class>/<filename>``.

Datasets: UCM-Captions and Sydney-Captions (Qu et al., 2016), RSICD (Lu et al., 2017), RSITMD (Yuan et al.,
2022), NWPU-Captions (Cheng et al., 2022).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skyeye.data.sources.base import Example, Reject, SourceContext, register

# Karpathy files call the part of val that is not held out "restval"; it is trained on by convention.
KARPATHY_SPLIT_ALIASES = {"restval": "train"}


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _captions(
    ctx: SourceContext,
    image_key: str,
    image: Path,
    captions: list[Any],
    first: int = 0,
    line: tuple[str, int] | None = None,
    **meta,
) -> Iterator[Example | Reject]:
    """One Example or Reject per caption of one image, keys ``image_key#n`` with n counted from `first`.

    `line` (text file name, line number of the first caption) marks where line-based captions come from.
    """
    rel = ctx.rel(image)
    size = ctx.image_size(rel)
    problem = ctx.image_problem(rel) if size is None else None
    for n, raw in enumerate(captions):
        key = f"{image_key}#{first + n}"
        where = f"{line[0]}:{line[1] + n}: " if line else ""
        caption = _text(raw)
        if problem:
            yield ctx.reject(key, problem[0], f"{where}{problem[1]}")
        elif not caption:
            yield ctx.reject(key, "empty text", f"{where}caption {first + n} of {rel}: {raw!r}")
        else:
            extra = {"line": line[1] + n} if line else {}
            yield ctx.example(key, "caption", [rel], size, {"caption": caption}, **meta, **extra)


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise ValueError(f"{path}: annotation file not found") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON annotation file ({e})") from e


@register("karpathy", options=("annotations", "images"))
def karpathy(ctx: SourceContext) -> Iterator[Example | Reject]:
    annotations, entries = karpathy_entries(ctx)
    images = ctx.path / ctx.options.get("images", "imgs")
    seen: set[str] = set()
    for number, entry in entries:
        native_split = entry.get("split")
        sentences = entry.get("sentences") or []
        filename = entry.get("filename")
        if not filename or str(filename) in seen:
            reason = "duplicate image entry" if filename else "no file name"
            image_key = filename or f"images[{number}]"
            for n in range(len(sentences)):
                yield ctx.reject(f"{image_key}#{n}", reason, f"{annotations.name}: images[{number}]")
            continue
        seen.add(str(filename))
        raws = [s.get("raw") if isinstance(s, dict) else s for s in sentences]
        meta = {"imgid": entry.get("imgid")}
        if native_split != ctx.split:
            meta["native_split"] = native_split
        yield from _captions(ctx, str(filename), images / str(filename), raws, **meta)


def karpathy_entries(ctx: SourceContext) -> tuple[Path, list[tuple[int, dict]]]:
    """The Karpathy-style annotation file and its image entries in `ctx.split`, each with its index in the file;
    a file without an `images` list, or with no image in the split, is an error naming the file."""
    annotations = _karpathy_file(ctx)
    data = _load_json(annotations)
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{annotations}: no 'images' list (not a Karpathy-style captions file)")
    in_split, splits = [], set()
    for number, entry in enumerate(entries):
        if isinstance(entry, dict):
            split = KARPATHY_SPLIT_ALIASES.get(entry.get("split"), entry.get("split"))
            splits.add(split)
            if split == ctx.split:
                in_split.append((number, entry))
    if not in_split:
        raise ValueError(
            f"{annotations}: no image is in split {ctx.split!r}; the file has {sorted(map(str, splits))} "
            "(restval counts as train)"
        )
    return annotations, in_split


def _karpathy_file(ctx: SourceContext) -> Path:
    name = ctx.options.get("annotations")
    if name:
        return ctx.path / name
    found = sorted(ctx.path.glob("dataset*.json"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise ValueError(
            f"{ctx.path}: expected exactly one dataset*.json (found {listed}); name it with option 'annotations'"
        )
    return found[0]


def _read_lines(path: Path) -> list[str]:
    """The lines of a text file; a final newline does not make an extra (empty) line."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


@register("precomp", options=("captions_per_image", "images"))
def precomp(ctx: SourceContext) -> Iterator[Example | Reject]:
    names_file = ctx.path / f"{ctx.split}_filename.txt"
    caps_file = ctx.path / f"{ctx.split}_caps.txt"
    for needed in (names_file, caps_file):
        if not needed.is_file():
            raise ValueError(f"precomp split {ctx.split!r}: {needed} not found")
    names, captions = _read_lines(names_file), _read_lines(caps_file)
    per_image = _captions_per_image(len(names), len(captions), ctx.options.get("captions_per_image"))
    if per_image is None:
        reason = f"caption/filename count mismatch ({len(captions)} vs {len(names)})"
        expected = ctx.options.get("captions_per_image")
        detail = f"{caps_file.name} has {len(captions)} lines and {names_file.name} {len(names)}: " + (
            f"not {expected} captions per file name" if expected else "neither equal nor a whole multiple"
        )
        for number in range(1, len(captions) + 1):
            yield ctx.reject(f"{caps_file.name}:{number}", reason, detail)
        return
    images = ctx.path / ctx.options.get("images", "imgs")
    start = 0
    seen: Counter = Counter()  # captions already given per file name, so a name listed again keeps keys unique
    while start < len(captions):
        # One image: `per_image` caption lines under one name line, or a run of lines naming the same file.
        name = names[start // per_image].strip()
        end = start + per_image
        if per_image == 1:
            while end < len(captions) and names[end].strip() == name:
                end += 1
        if not name:
            for number in range(start + 1, end + 1):
                yield ctx.reject(f"{caps_file.name}:{number}", "empty file name", f"{names_file.name}")
        else:
            first = seen[name]
            seen[name] += end - start
            yield from _captions(ctx, name, images / name, captions[start:end], first, (caps_file.name, start + 1))
        start = end


def _captions_per_image(names: int, captions: int, option: Any) -> int | None:
    if option is not None:
        k = int(option)
        if k < 1:
            raise ValueError(f"precomp: captions_per_image must be >= 1, got {option!r}")
        return k if captions == k * names or (k == 1 and captions == names) else None
    if captions == names:
        return 1
    if names and captions % names == 0:
        return captions // names
    return None


def _nwpu_images(ctx: SourceContext) -> Path:
    if "images" in ctx.options:
        return ctx.path / ctx.options["images"]
    resisc = ctx.path / "NWPU-RESISC45"
    return resisc if resisc.is_dir() else ctx.path / "imgs"


@register("nwpu_captions", options=("annotations", "images"))
def nwpu_captions(ctx: SourceContext) -> Iterator[Example | Reject]:
    annotations = ctx.path / ctx.options.get("annotations", "dataset_nwpu.json")
    data = _load_json(annotations)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{annotations}: expected a mapping from class name to a list of images")
    splits = {e.get("split") for entries in data.values() for e in entries if isinstance(e, dict)}
    if ctx.split not in splits:
        raise ValueError(f"{annotations}: no image is in split {ctx.split!r}; the file has {sorted(map(str, splits))}")
    images = _nwpu_images(ctx)
    for label, entries in data.items():
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("split") != ctx.split:
                continue
            captions = _nwpu_raws(entry)
            filename = entry.get("filename")
            if not filename:
                where = f"{annotations.name}: {label}[{number}]"
                for n in range(len(captions)):
                    yield ctx.reject(f"{label}/[{number}]#{n}", "no file name", where)
                continue
            yield from _captions(ctx, f"{label}/{filename}", images / label / filename, captions, label=label,
                                 imgid=entry.get("imgid"))  # fmt: skip


def _nwpu_raws(entry: dict) -> list[Any]:
    """``raw``, ``raw_1``, ``raw_2``, ... while present (NWPU-Captions has five per image)."""
    raws = [entry.get("raw")]
    n = 1
    while f"raw_{n}" in entry:
        raws.append(entry[f"raw_{n}"])
        n += 1
    return raws
