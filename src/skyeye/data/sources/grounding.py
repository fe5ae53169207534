"""Visual-grounding sources: a referring expression and the pixel box of the one object it names.

`dior_rsvg` — DIOR-RSVG (Zhan, Xiong & Yuan, "RSVG: Exploring Data and Models for Visual Grounding on
Remote Sensing Data", TGRS 2023; github.com/ZhanYang-nwpu/RSVG-pytorch). Layout::

    Annotations/00001.xml ...   VOC XML; every <object> has <name>, <bndbox> and <description>
    JPEGImages/00001.jpg ...    800x800 DIOR images
    train.txt val.txt test.txt  one object index per line

The index files list objects, not images: index i is the i-th `<object>` counted from 0 over all XML
files in sorted file-name order (the official loader counts from 0 while walking the annotation folder;
the official files hold 0..38319 over 26,991 / 3,829 / 7,500 lines). The unit is one listed index: it
becomes one Example (expression = `<description>`, box = `<bndbox>`) or one Reject ("index out of range"
when fewer objects are annotated than the index needs, "unreadable annotation" when its XML file does not
parse: that file's objects are still counted from the raw `<object>` tags so later indices stay aligned,
"unreadable index line", "duplicate index", "empty text", "unreadable box", "missing image", box checks).
The XML files are streamed in order and only the listed objects are kept. Options: `annotations`
(default "Annotations"), `images` (default "JPEGImages"), `split_file` (default "{split}.txt").

`rsvg` — RSVG (Sun et al., "Visual Grounding in Remote Sensing Images", ACM MM 2022, GeoVG;
sunyuxi.github.io/publication/GeoVG): 4,239 images, 7,933 expressions (5,505 / 1,201 / 1,227). Layout::

    images/...                           the images
    rsvg_train.pth rsvg_val.pth rsvg_test.pth   (or train.pth / val.pth / test.pth)

Each `.pth` is a `torch.save`d list of tuples `(image_file, box, phrase, ...)` (the trailing fields, e.g.
parse information, are ignored) with box = [x1, y1, x2, y2] in pixels (as the TransVG-style loaders and
converters of RSVG use it). Files are read with `torch.load(weights_only=True)`, which accepts lists and
tuples of str / int / float / tensors; a file that needs arbitrary unpickling (numpy arrays) gives one
Reject "unreadable annotation" unless the option `weights_only: false` is set for a trusted file. The unit
is one tuple (key = its position). Options: `images` (default "images"), `file` (the .pth file).

Boxes: `voc.check_box` (clipped within 1 px of the border, else "box outside image" / "degenerate box").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from skyeye.data.sources.base import Example, Reject, SourceContext, register
from skyeye.data.sources.class_names import readable
from skyeye.data.sources.voc import VocError, check_box, count_objects, parse_voc


def _grounding(ctx: SourceContext, key: str, image: str, expression: str, box, **meta) -> Example | Reject:
    """One grounding Example, or the Reject that explains why the unit cannot give one."""
    expression = " ".join(str(expression or "").split())
    if not expression:
        return ctx.reject(key, "empty text", f"{meta.get('annotation', image)}: no expression")
    size = ctx.image_size(image)
    if size is None:
        return ctx.reject(key, *ctx.image_problem(image))
    clipped, reason, detail = check_box(box, *size)
    if clipped is None:
        return ctx.reject(key, reason, f"{meta.get('annotation', image)}: {detail}")
    return ctx.example(key, "grounding", [image], size, {"expression": expression, "box": clipped}, **meta)


def _read_indices(ctx: SourceContext, index_file: Path) -> Iterator[Reject | tuple[int, str]]:
    """(index, line key) per listed index; Rejects for unreadable and duplicate lines."""
    seen: set[int] = set()
    with index_file.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text:
                continue
            key = f"{index_file.name}:{number}"
            try:
                index = int(text)
                if index < 0:
                    raise ValueError("negative")
            except ValueError:
                yield ctx.reject(key, "unreadable index line", repr(text[:80]))
                continue
            if index in seen:
                yield ctx.reject(key, "duplicate index", f"index {index} listed again")
                continue
            seen.add(index)
            yield index, key


@register("dior_rsvg", options=("annotations", "images", "split_file"))
def dior_rsvg(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    annotations = ctx.path / options.get("annotations", "Annotations")
    images = ctx.path / options.get("images", "JPEGImages")
    index_file = ctx.path / options.get("split_file", f"{ctx.split}.txt")
    if not index_file.is_file():
        yield ctx.reject(index_file.name, "missing split file", ctx.rel(index_file))
        return
    wanted: set[int] = set()
    for item in _read_indices(ctx, index_file):
        if isinstance(item, Reject):
            yield item
        else:
            wanted.add(item[0])
    offset, files = 0, 0
    for xml in sorted(annotations.glob("*.xml"), key=lambda p: p.name):
        if not wanted:
            break
        files += 1
        try:
            annotation = parse_voc(xml)
        except VocError as error:
            count = count_objects(xml)
            for index in sorted(wanted.intersection(range(offset, offset + count))):
                wanted.discard(index)
                yield ctx.reject(str(index), "unreadable annotation", str(error))
            offset += count
            continue
        image = ctx.rel(images / (annotation.filename or f"{xml.stem}.jpg"))
        for position, obj in enumerate(annotation.objects):
            index = offset + position
            if index not in wanted:
                continue
            wanted.discard(index)
            meta = {"index": index, "annotation": ctx.rel(xml), "name": readable(obj.name)}
            if obj.box is None:
                yield ctx.reject(str(index), "unreadable box", f"{ctx.rel(xml)} object {position}: {obj.box_error}")
            else:
                yield _grounding(ctx, str(index), image, obj.description, obj.box, **meta)
        offset += len(annotation.objects)
    for index in sorted(wanted):
        detail = f"index {index} of {index_file.name}; {offset} objects in {files} files of {ctx.rel(annotations)}"
        yield ctx.reject(str(index), "index out of range", detail)


def _rsvg_file(ctx: SourceContext) -> Path:
    if "file" in ctx.options:
        return ctx.path / ctx.options["file"]
    candidates = [ctx.path / f"rsvg_{ctx.split}.pth", ctx.path / f"{ctx.split}.pth"]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _as_box(value) -> list[float]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ValueError(f"box {value!r} is not 4 numbers")
    return [float(v) for v in value]


@register("rsvg", options=("file", "images", "weights_only"))
def rsvg(ctx: SourceContext) -> Iterator[Example | Reject]:
    import torch

    path = _rsvg_file(ctx)
    if not path.is_file():
        yield ctx.reject(path.name, "missing split file", ctx.rel(path))
        return
    try:
        items = torch.load(path, map_location="cpu", weights_only=bool(ctx.options.get("weights_only", True)))
    except Exception as error:  # any unpickling failure: the file is the unit that failed
        yield ctx.reject(path.name, "unreadable annotation", f"{ctx.rel(path)}: {type(error).__name__}: {error}"[:500])
        return
    if not isinstance(items, list | tuple):
        yield ctx.reject(path.name, "unreadable annotation", f"{ctx.rel(path)} holds {type(items).__name__}")
        return
    images = ctx.path / ctx.options.get("images", "images")
    for position, item in enumerate(items):
        key = str(position)
        try:
            if not isinstance(item, list | tuple) or len(item) < 3 or not isinstance(item[0], str):
                raise ValueError(f"item is not (image_file, box, phrase, ...): {item!r}"[:200])
            box = _as_box(item[1])
        except (ValueError, TypeError) as error:
            yield ctx.reject(key, "unreadable annotation", f"{path.name}[{position}]: {error}")
            continue
        image = ctx.rel(images / item[0])
        yield _grounding(ctx, key, image, item[2], box, annotation=f"{ctx.rel(path)}[{position}]")
