"""`ucm_scene` — UC Merced Land Use scenes (Yang & Newsam, 2010) on UCM-Captions' images and splits.

UCM-Captions (Qu et al., 2016) renamed the 2,100 UC Merced images to numbers: image N is file (N-1) % 100 of
class `UCM_CLASSES[(N-1) // 100]` (the 21 folder names, sorted). This adapter reads its Karpathy file for the
split, so that a scene benchmark can use images the caption and VQA training never saw, labelled with UC
Merced's own class names::

    <folder>/dataset.json   {"images": [{"filename": "1.tif", "split": "train", ...}, ...]}
    <folder>/imgs/1.tif

The unit is one image entry of the split; it becomes an Example {"label": readable class, "classes": the 21
readable names, sorted} or a Reject: "unknown class" (a file name that is not a number 1..2100), "no file
name", "duplicate image entry", "missing image", "unreadable image". The file name is taken as written
(the shared copy ships `N.jpg`). Options as for `karpathy`: `annotations` (default: the single
`dataset*.json`), `images` (default `imgs`). A split no entry has raises ValueError naming the file's splits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from skyeye.data.sources.base import Example, Reject, SourceContext, register
from skyeye.data.sources.captions import karpathy_entries
from skyeye.data.sources.class_names import readable

UCM_CLASSES = ("agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
               "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
               "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks",
               "tenniscourt")  # fmt: skip
IMAGES_PER_CLASS = 100


def ucm_class(filename: str) -> str | None:
    """The UC Merced class folder of UCM-Captions image `N.ext`; None for a name that is no image id."""
    stem = PurePosixPath(filename).stem
    if not stem.isdigit() or not 1 <= int(stem) <= IMAGES_PER_CLASS * len(UCM_CLASSES):
        return None
    return UCM_CLASSES[(int(stem) - 1) // IMAGES_PER_CLASS]


@register("ucm_scene", options=("annotations", "images"))
def ucm_scene(ctx: SourceContext) -> Iterator[Example | Reject]:
    annotations, entries = karpathy_entries(ctx)
    images = ctx.path / ctx.options.get("images", "imgs")
    classes = sorted(readable(name) for name in UCM_CLASSES)
    seen: set[str] = set()
    for number, entry in entries:
        filename = str(entry.get("filename") or "")
        where = f"{annotations.name}: images[{number}]"
        if not filename or filename in seen:
            yield ctx.reject(filename or f"images[{number}]", "duplicate image entry" if filename else "no file name",
                             where)  # fmt: skip
            continue
        seen.add(filename)
        folder = ucm_class(filename)
        if folder is None:
            yield ctx.reject(filename, "unknown class", f"{where}: {filename!r} is not a UC Merced image id 1..2100")
            continue
        relative = ctx.rel(images / filename)
        size = ctx.image_size(relative)
        if size is None:
            yield ctx.reject(filename, *ctx.image_problem(relative))
            continue
        fields = {"label": readable(folder), "classes": classes}
        yield ctx.example(filename, "scene", [relative], size, fields, class_folder=folder, imgid=entry.get("imgid"))
