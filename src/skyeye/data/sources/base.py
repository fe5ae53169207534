"""What every native-dataset adapter yields, and the registry that the data recipe names adapters by.

An adapter reads one dataset in its original layout and yields, for one split, a stream of
- `Example`: one native annotation unit in a task-neutral form (a caption, a question/answer pair, a
  referring expression with its pixel box, the objects of one image, a scene label), or
- `Reject`: a native unit that could not be read, with the reason (missing image, unreadable annotation
  line, box outside the image, empty text, ...).

Adapters never write instructions: `skyeye.data.instructions` turns examples into records. Every native
unit an adapter reads becomes exactly one Example or one Reject, so the build can prove that nothing was
silently dropped. Adapters stream (generators) and never hold a whole large split in memory needlessly.

Example.fields by kind:
- "caption":       {"caption": str}                                  (images: 1 image or video frames)
- "vqa":           {"question": str, "answer": str, "question_type": str}
- "grounding":     {"expression": str, "box": [x1, y1, x2, y2]}      (pixels, continuous coordinates)
- "regions":       {"objects": [{"name": str, "box": [x1, y1, x2, y2]}, ...]}  plus optional
                   "captions": [str] (for conversations built from captioned images)
- "scene":         {"label": str, "classes": [str]}                  (readable names, e.g. "dense residential")
Image paths are POSIX paths relative to the data root; a video frame is written `path/to/video.mp4#frame=N`.

Keys: several units about one image (its captions) are keyed `{image key}#{n}` and yielded one after another,
Rejects included; the build makes one conversation per image from them (`skyeye.data.build.image_key`).
Images: `SourceContext.image_size` loads each image whole, as training will, once per build; an image that is
missing, unidentifiable, truncated or corrupt gives None, and `SourceContext.image_problem` the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyeye.images import ImageError, load_image

EXAMPLE_KINDS = ("caption", "vqa", "grounding", "regions", "scene")


@dataclass
class Example:
    source: str
    split: str
    key: str  # unique within (source, split); becomes part of the record id; see "Keys" above
    kind: str
    images: list[str]
    image_size: tuple[int, int] | None  # (width, height) of images[0] as stored; None only when unknowable
    fields: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)  # anything worth keeping (native ids, class, gsd, ...)


@dataclass
class Reject:
    source: str
    split: str
    key: str  # what was being read: an image name, "file.txt:123", an object index, ...
    reason: str  # short and countable, e.g. "missing image", "unreadable line", "box outside image"
    detail: str = ""  # the specifics (the bad line, the file, the numbers)


class ImageCheck:
    """Loads every image the way training will (`skyeye.images.load_image`, every pixel decoded), once per path.

    A header can be intact while the pixel data is truncated or corrupt; such an image must be rejected when the
    records are built, not abort training later. One check is shared by all the sources of a build, so an image
    several sources name (UCM's captions and its RSIVQA questions) is decoded once.
    """

    def __init__(self) -> None:
        self._results: dict[Path, tuple[tuple[int, int] | None, str]] = {}

    def __call__(self, path: Path) -> tuple[tuple[int, int] | None, str]:
        """(width, height) as stored and "", or None and why the image cannot be used."""
        if path not in self._results:
            try:
                self._results[path] = load_image(path).original_size, ""
            except ImageError as error:
                self._results[path] = None, str(error).removeprefix(f"{path}: ")
        return self._results[path]


@dataclass
class SourceContext:
    """Where and what an adapter reads: `folder` is the source's folder relative to `root`."""

    root: Path
    folder: str
    source: str
    split: str
    options: dict[str, Any] = field(default_factory=dict)
    images: ImageCheck = field(default_factory=ImageCheck, repr=False)

    @property
    def path(self) -> Path:
        return self.root / self.folder

    def rel(self, path: Path) -> str:
        """A path under `root` written relative to it (what records store)."""
        return path.relative_to(self.root).as_posix()

    def image_size(self, relative: str) -> tuple[int, int] | None:
        """(width, height) of an image that loads whole; None when it is missing, unreadable or damaged."""
        return self.images(self.root / relative)[0]

    def image_problem(self, relative: str) -> tuple[str, str]:
        """(reason, detail) for an image `image_size` gave None for: "missing image" or "unreadable image"."""
        path = self.root / relative
        if not path.is_file():
            return "missing image", relative
        return "unreadable image", f"{relative}: {self.images(path)[1]}"

    def reject(self, key: str, reason: str, detail: str = "") -> Reject:
        return Reject(self.source, self.split, key, reason, detail)

    def example(self, key: str, kind: str, images: list[str], image_size, fields: dict, **meta) -> Example:
        return Example(self.source, self.split, key, kind, images, image_size, fields, meta)


Adapter = Callable[[SourceContext], Iterator[Example | Reject]]
ADAPTERS: dict[str, Adapter] = {}
ADAPTER_OPTIONS: dict[str, frozenset[str]] = {}  # the options each adapter reads, so a recipe typo is an error


def register(name: str, options: tuple[str, ...] = ()) -> Callable[[Adapter], Adapter]:
    def add(adapter: Adapter) -> Adapter:
        if name in ADAPTERS:
            raise ValueError(f"adapter {name!r} registered twice")
        ADAPTERS[name] = adapter
        ADAPTER_OPTIONS[name] = frozenset(options)
        return adapter

    return add
