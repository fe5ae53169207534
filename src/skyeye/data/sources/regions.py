"""Object-detection sources read as "regions" examples: all objects of one image, {"name", "box"} each.

The unit is one image. Objects that cannot be used (unreadable line or box, box outside the image,
degenerate box, difficult objects excluded by option) are dropped from their image and counted in
`meta["dropped_objects"] = {reason: count}`; an image left with no object becomes a Reject whose reason
is the most common drop reason ("no objects" when the image had none to begin with). Names are made
readable (`class_names.readable`: "large-vehicle" → "large vehicle", "golffield" → "golf field").
Common option: `difficult` (default true: keep objects marked difficult).

`dior` — DIOR (Li et al., ISPRS 2020), VOC XML. Layout::

    Annotations/Horizontal Bounding Boxes/00001.xml   (or Annotations/00001.xml; option `annotations`)
    JPEGImages-trainval/00001.jpg  JPEGImages-test/11726.jpg   (or JPEGImages/; option `images`: a folder
                                                                 or a list, searched in order)
    ImageSets/Main/train.txt val.txt test.txt         image stems (option `split_file`)

`hrrsd` — HRRSD (Zhang et al., TGRS 2019), 13 classes, VOC XML. Layout (options as for `dior`)::

    OPT2017/Annotations/*.xml  OPT2017/JPEGImages/*.jpg  OPT2017/ImageSets/Main/{train,val,test}.txt

For both: the unit is a listed stem; "missing annotation" / "unreadable annotation" (malformed XML, the
file named) / "missing image" / "duplicate stem" are the image-level rejects; the image file is the XML's
`<filename>`, else `{stem}.jpg`. Boxes follow `voc.check_box` (clipped within 1 px of the border).

`dota` — DOTA v1.0/v1.5/v2.0 (Xia et al., CVPR 2018). Layout::

    train/labelTxt/P0000.txt  train/images/P0000.png   ({split}/labelTxt and {split}/images when present,
    labelTxt/P0000.txt        images/P0000.png          else labelTxt/ and images/; options `labels`, `images`)

A label file may start with `imagesource:GoogleEarth` and `gsd:0.146` (gsd may be `null`), kept in meta
("imagesource", "gsd": float or None); every other line is `x1 y1 x2 y2 x3 y3 x4 y4 category difficult`
(the difficult flag may be missing). The polygon becomes its axis-aligned box (min/max), clipped to the
image: corners of objects cut by the border lie outside, so any box that keeps an area inside is kept;
none → "box outside image". A line that does not parse is dropped as "unreadable line". The unit is a
label file (sorted by name); its image is `{stem}.png` (option `image_ext`).

`nwpu_vhr10` — NWPU VHR-10 (Cheng et al., 2014). Layout::

    ground truth/001.txt        lines `(x1,y1),(x2,y2),class_id`, ids 1..10, blank lines tolerated
    positive image set/001.jpg

There is no official split: option `splits` {split: listing of stems or file names, relative to the
source folder}, else the hashed split of `scenes.split_members` over the stems (`split_fractions`,
default {"train": 0.8, "test": 0.2}; `seed`; split "all" takes every file). Options `labels`, `images`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from skyeye.data.sources.base import Example, Reject, SourceContext, register
from skyeye.data.sources.class_names import readable
from skyeye.data.sources.scenes import DEFAULT_FRACTIONS, split_listing, split_members
from skyeye.data.sources.voc import BOX_TOLERANCE, VocError, check_box, parse_voc

NWPU_VHR10_CLASSES = ("airplane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
                      "ground track field", "harbor", "bridge", "vehicle")  # fmt: skip

Candidate = tuple[str, "list[float] | None", str]  # (readable name, box or None, reason when None)


def _regions(ctx: SourceContext, key: str, image: str, candidates: list[Candidate], dropped: Counter,
             tolerance: float = BOX_TOLERANCE, **meta) -> Example | Reject:  # fmt: skip
    """The regions Example of one image, or its Reject; drops unusable objects and counts them."""
    size = ctx.image_size(image)
    if size is None:
        return ctx.reject(key, *ctx.image_problem(image))
    objects = []
    for name, box, error in candidates:
        if box is None:
            dropped[error] += 1
            continue
        clipped, reason, _ = check_box(box, *size, tolerance)
        if clipped is None:
            dropped[reason] += 1
        elif not name:
            dropped["empty name"] += 1
        else:
            objects.append({"name": name, "box": clipped})
    where = meta.get("annotation", image)
    if not objects:
        if not dropped:
            return ctx.reject(key, "no objects", where)
        return ctx.reject(key, dropped.most_common(1)[0][0], f"{where}: every object dropped: {dict(dropped)}")
    if dropped:
        meta["dropped_objects"] = dict(dropped)
    return ctx.example(key, "regions", [image], size, {"objects": objects}, **meta)


def _include_difficult(ctx: SourceContext) -> bool:
    value = ctx.options.get("difficult", True)
    return value.lower() not in ("false", "no", "0", "exclude") if isinstance(value, str) else bool(value)


def _first_existing(ctx: SourceContext, candidates: list[str]) -> Path:
    paths = [ctx.path / c for c in candidates]
    return next((p for p in paths if p.exists()), paths[-1])


def _option_or_first(ctx: SourceContext, option: str, candidates: list[str]) -> Path:
    return ctx.path / ctx.options[option] if option in ctx.options else _first_existing(ctx, candidates)


def _folders(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _voc_regions(ctx: SourceContext, annotations: Path, image_dirs: list[Path], split_file: Path):
    if not split_file.is_file():
        yield ctx.reject(split_file.name, "missing split file", ctx.rel(split_file))
        return
    difficult = _include_difficult(ctx)
    seen: set[str] = set()
    with split_file.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            stem = line.split()[0]
            if stem in seen:
                yield ctx.reject(stem, "duplicate stem", f"{split_file.name}:{number}")
                continue
            seen.add(stem)
            xml = annotations / f"{stem}.xml"
            if not xml.is_file():
                yield ctx.reject(stem, "missing annotation", ctx.rel(xml))
                continue
            try:
                annotation = parse_voc(xml)
            except VocError as error:
                yield ctx.reject(stem, "unreadable annotation", f"{ctx.rel(xml)}: {error}")
                continue
            names = [n for n in (annotation.filename, f"{stem}.jpg") if n]
            image = next((d / n for n in names for d in image_dirs if (d / n).is_file()), image_dirs[0] / names[0])
            dropped: Counter = Counter()
            candidates: list[Candidate] = []
            for obj in annotation.objects:
                if obj.difficult and not difficult:
                    dropped["difficult excluded"] += 1
                else:
                    candidates.append((readable(obj.name), obj.box, "unreadable box"))
            yield _regions(ctx, stem, ctx.rel(image), candidates, dropped, annotation=ctx.rel(xml))


@register("dior", options=("annotations", "difficult", "images", "split_file"))
def dior(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    annotations = _option_or_first(ctx, "annotations", ["Annotations/Horizontal Bounding Boxes", "Annotations"])
    folders = _folders(options.get("images", ["JPEGImages-trainval", "JPEGImages-test", "JPEGImages"]))
    image_dirs = [ctx.path / f for f in folders]
    split_file = ctx.path / options.get("split_file", f"ImageSets/Main/{ctx.split}.txt")
    yield from _voc_regions(ctx, annotations, image_dirs, split_file)


@register("hrrsd", options=("annotations", "difficult", "images", "split_file"))
def hrrsd(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    annotations = ctx.path / options.get("annotations", "OPT2017/Annotations")
    image_dirs = [ctx.path / f for f in _folders(options.get("images", "OPT2017/JPEGImages"))]
    split_file = ctx.path / options.get("split_file", f"OPT2017/ImageSets/Main/{ctx.split}.txt")
    yield from _voc_regions(ctx, annotations, image_dirs, split_file)


def _dota_header(text: str, meta: dict) -> bool:
    """Read an `imagesource:` / `gsd:` header line into meta; False for any other line."""
    key, _, value = text.partition(":")
    key, value = key.strip().lower(), value.strip()
    if key == "imagesource":
        meta["imagesource"] = value
    elif key == "gsd":
        try:
            gsd = float(value)
            meta["gsd"] = gsd if math.isfinite(gsd) and gsd > 0 else None
        except ValueError:
            meta["gsd"] = None  # "null" in DOTA v1.5/v2.0
    else:
        return False
    return True


def _dota_line(text: str) -> tuple[str, list[float], bool]:
    parts = text.split()
    if len(parts) not in (9, 10):
        raise ValueError(f"{len(parts)} fields")
    coords = [float(p) for p in parts[:8]]
    if not all(math.isfinite(c) for c in coords):
        raise ValueError("non-finite coordinate")
    difficult = int(parts[9]) if len(parts) == 10 else 0
    xs, ys = coords[0::2], coords[1::2]
    return parts[8], [min(xs), min(ys), max(xs), max(ys)], difficult == 1


@register("dota", options=("difficult", "image_ext", "images", "labels"))
def dota(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    labels = _option_or_first(ctx, "labels", [f"{ctx.split}/labelTxt", "labelTxt"])
    images = _option_or_first(ctx, "images", [f"{ctx.split}/images", "images"])
    extension = options.get("image_ext", ".png")
    extension = extension if extension.startswith(".") else f".{extension}"
    difficult = _include_difficult(ctx)
    if not labels.is_dir():
        yield ctx.reject(labels.name, "missing folder", ctx.rel(labels))
        return
    for path in sorted(labels.glob("*.txt"), key=lambda p: p.name):
        meta: dict = {"annotation": ctx.rel(path)}
        dropped: Counter = Counter()
        candidates: list[Candidate] = []
        try:
            text = path.read_text(encoding="utf-8-sig", errors="replace")
        except OSError as error:
            yield ctx.reject(path.stem, "unreadable annotation", f"{ctx.rel(path)}: {error}")
            continue
        for line in text.splitlines():
            line = line.strip()
            if not line or (":" in line and _dota_header(line, meta)):
                continue
            try:
                category, box, is_difficult = _dota_line(line)
            except ValueError:
                dropped["unreadable line"] += 1
                continue
            if is_difficult and not difficult:
                dropped["difficult excluded"] += 1
            else:
                candidates.append((readable(category), box, ""))
        image = ctx.rel(images / f"{path.stem}{extension}")
        yield _regions(ctx, path.stem, image, candidates, dropped, math.inf, **meta)


_NUMBER = r"\s*([-+\d.eE]+)\s*"
_NWPU_LINE = re.compile(rf"\({_NUMBER},{_NUMBER}\)\s*,\s*\({_NUMBER},{_NUMBER}\)\s*,\s*(\d+)")


def _nwpu_units(ctx: SourceContext, labels: Path) -> Iterator[str | Reject]:
    """The stems of this split: from the listing in option `splits`, else the hashed split."""
    listing = split_listing(ctx)
    if isinstance(listing, Reject):
        yield listing
        return
    if listing is not None:
        with listing.open(encoding="utf-8", errors="replace") as lines:
            yield from (Path(line.strip()).stem for line in lines if line.strip())
        return
    if not labels.is_dir():
        yield ctx.reject(labels.name, "missing folder", ctx.rel(labels))
        return
    stems = [p.stem for p in labels.glob("*.txt")]
    fractions = ctx.options.get("split_fractions", DEFAULT_FRACTIONS)
    members = split_members(stems, ctx.split, fractions, str(ctx.options.get("seed", 0)))
    yield from sorted(members)


@register("nwpu_vhr10", options=("difficult", "image_ext", "images", "labels", "seed", "split_fractions", "splits"))
def nwpu_vhr10(ctx: SourceContext) -> Iterator[Example | Reject]:
    labels = ctx.path / ctx.options.get("labels", "ground truth")
    images = ctx.path / ctx.options.get("images", "positive image set")
    extension = ctx.options.get("image_ext", ".jpg")
    seen: set[str] = set()
    for stem in _nwpu_units(ctx, labels):
        if isinstance(stem, Reject):
            yield stem
            continue
        if stem in seen:
            yield ctx.reject(stem, "duplicate stem", "listed again")
            continue
        seen.add(stem)
        path = labels / f"{stem}.txt"
        try:
            text = path.read_text(encoding="utf-8-sig", errors="replace")
        except OSError:
            yield ctx.reject(stem, "missing annotation", ctx.rel(path))
            continue
        dropped: Counter = Counter()
        candidates: list[Candidate] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            match = _NWPU_LINE.fullmatch(line.strip())
            try:
                if match is None:
                    raise ValueError(line)
                box = [float(v) for v in match.groups()[:4]]
            except ValueError:
                dropped["unreadable line"] += 1
                continue
            class_id = int(match.group(5))
            if not 1 <= class_id <= len(NWPU_VHR10_CLASSES):
                dropped["unknown class"] += 1
                continue
            candidates.append((NWPU_VHR10_CLASSES[class_id - 1], box, ""))
        image = ctx.rel(images / f"{stem}{extension}")
        yield _regions(ctx, stem, image, candidates, dropped, annotation=ctx.rel(path))
