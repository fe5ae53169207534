"""Visual question answering sources: RSVQA (LR and HR), RSIVQA and FloodNet-VQA.

Every question is one native unit: it becomes one `vqa` Example (fields `question`, `answer`,
`question_type`) or one Reject with a countable reason. Image folders are listed once per split (names
resolved by exact name, then by stem, so `1.tif` in an annotation finds `1.jpg` on disk) and each image is
decoded at most once per build (a truncated or corrupt one is rejected "unreadable image", the detail says
why), so the per-question work is a few dictionary look-ups.

## `rsvqa` — RSVQA-LR and RSVQA-HR (Lobry et al., TGRS 2020)

    <source folder>/
        {prefix}_split_{split}_questions.json   {"questions": [{"id", "img_id", "type", "question",
                                                                "answers_ids": [...], "active"}, ...]}
        {prefix}_split_{split}_answers.json     {"answers": [{"id", "question_id", "answer", "active"}, ...]}
        {prefix}_split_{split}_images.json      {"images": [{"id", "questions_ids": [...], "active"}, ...]}
        Images_LR/{img_id}.tif                  (LR, prefix `LR`, 256x256 Sentinel-2 RGB)
        Data/{img_id}.tif                       (HR, prefix `USGS`, 512x512 USGS orthophotos)

Splits: `train`, `val`, `test`; HR also `test_phili` (Philadelphia, another sensor). Ids are list positions
(`answers[question["answers_ids"][0]]`); the adapter checks that the entry at that position carries that id
and falls back to an id table when a file is not positional. A split's files list entries that belong to
other splits as `"active": false` placeholders (often without text): each becomes a Reject
"inactive question", so the accounting shows them instead of dropping them silently. The adapter walks the
questions file (one unit per question), so the `*_images.json` file is not needed. `question_type` is the
native `type` (`rural_urban`, `presence`, `count`, `comp`, `area`) and the answer is kept raw (`"12"`,
`"0m2"`, `"yes"`); meta: `question_id`, `image_id`, `answer_id`.
Options:
- `prefix`: file prefix (default: the one prefix whose `*_split_{split}_questions.json` exists).
- `images`: image folder relative to the source folder (default: the first of `Images_LR`, `Data`,
  `Images`, `images` that exists).
- `image_size`: an int or `[width, height]`, the size every image must have (RSVQA sizes are fixed: LR 256,
  HR 512); an image of another size is rejected "unexpected image size". Images are decoded either way.

## `rsivqa` — RSIVQA (Zheng et al., TGRS 2021)

    <source folder>/ucm_vqa.txt, ucm_res.txt, sydney_vqa.txt, rsicd_vqa.txt (AID), dota_train_vqa2.txt, ...
        1.tif:What is the theme of this picture?farmland
        1.tif:How many trees in the picture?one
        P0000: how many planes are there in this picture?21        (DOTA / HRRSD: bare stems, a space)

A line is split at the FIRST `:` (image reference) and the LAST `?` (question | answer); the question keeps
its `?`. Answers are kept as written ("four", "top left corner"); number words ("twenty-two") also give
meta `answer_digits` ("22"). Image references resolve by stem in the images folder, so `N.tif` finds the
re-encoded `N.jpg`. Keys are `file:line` (file relative to the data root).
Rejects: "unreadable line" (no `:` or no `?`, or no image reference), "empty text", "missing object word"
(lines such as `How many  in the picture?four`, where the release lost the object name: the question cannot
be answered from the image, so they are rejected and counted unless option `keep_missing_object` is true),
"image not in splits file", "missing image", "unreadable image". Whitespace-only lines are not questions
and are skipped.
`question_type` is inferred (RSIVQA has none): `count` (starts with "how many"), `presence` (answer yes/no),
`scene` ("what is the theme/scene/category ...", "what kind/type of scene ..."), `location` ("where ...",
"what is the location ..."), else `other`.
Options:
- `files`: txt files relative to the source folder (default: every `*.txt` there, sorted).
- `images`: image folder relative to the DATA ROOT (default: the source folder), e.g. `ucm_captions/imgs`;
  `recursive: true` also indexes its subfolders.
- `extension`: preferred extension when several files share a stem (e.g. `.jpg`).
- `check_images` (default true): false emits examples without looking at the images folder (path
  `images/<reference>`, image_size None), for annotation-only checks.
- `splits_from`: a Karpathy `dataset.json` relative to the data root giving each image's split by filename
  stem. Lines are read for the split their image belongs to; lines whose image is not in it, and
  unreadable lines (no image known), are reported in split `unlisted_split` (default `train`), so each
  line is accounted exactly once over all splits. Without `splits_from` every line belongs to
  `split_of_all` (default `train`) and asking for another split is an error.
- `keep_missing_object` (default false).

## `floodnet_vqa` — FloodNet Track 2 (Rahnemoonfar et al., 2021)

    <source folder>/Questions/Training Question.json | Valid Question.json | Test_Question.json
        {"0": {"Image_ID": "10165.JPG", "Question": "What is the overall condition of the given image?",
               "Ground_Truth": "non flooded", "Question_Type": "Condition_Recognition"}, ...}
    <source folder>/Images/Train_Image/ | Valid_Image/ | Test_Image/

One unit per question id. `Ground_Truth` is a string or an int (counting); questions without it (the
challenge's held-out splits) are rejected as "missing answer". `question_type` is the native
`Question_Type` (`Condition_Recognition`, `Yes_No`, `Simple_Counting`, `Complex_Counting`); meta:
`question_id`, `image_id`.
Options: `questions` and `images`, relative to the source folder, each a path (`{split}` is replaced by the
split name) or a mapping split → path; defaults as above (`train`, `val`, `test`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyeye.data.sources.base import Example, Reject, SourceContext, register

IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_UNSEEN = object()


# --------------------------------------------------------------------------------------------- helpers


def _stem(reference: str) -> str:
    """`1.tif` → `1`; `P0000` → `P0000` (a name without an image suffix is already a stem)."""
    name = reference.strip().rsplit("/", 1)[-1]
    base, dot, suffix = name.rpartition(".")
    return base if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES else name


class _ImageFolder:
    """One listing of an image folder (relative to the data root); resolves references to relative paths."""

    def __init__(self, root: Path, folder: str, extension: str | None = None, recursive: bool = False):
        self.folder = folder.strip("/")
        self.extension = ("." + extension.lstrip(".")).lower() if extension else None
        self.names: set[str] = set()
        self.by_stem: dict[str, list[str]] = {}
        base = root / self.folder
        if base.is_dir():
            for name in _list_files(base, recursive):
                self.names.add(name)
                if name.lower().endswith(IMAGE_SUFFIXES):  # only image files are found by stem
                    self.by_stem.setdefault(_stem(name), []).append(name)

    def resolve(self, reference: str) -> str | None:
        """The image's path relative to the data root, or None when no file matches."""
        reference = reference.strip()
        if reference in self.names and reference.lower().endswith(IMAGE_SUFFIXES):
            return self._path(reference)
        candidates = self.by_stem.get(_stem(reference))
        if not candidates:
            return None
        if len(candidates) > 1:
            wanted = [self.extension] if self.extension else []
            wanted.append("." + reference.rpartition(".")[2].lower())
            for suffix in wanted:
                for name in candidates:
                    if name.lower().endswith(suffix):
                        return self._path(name)
            return self._path(sorted(candidates)[0])
        return self._path(candidates[0])

    def _path(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name


def _list_files(base: Path, recursive: bool) -> Iterator[str]:
    """File names under `base` (POSIX, relative to it), one directory scan each."""
    stack = [("", base)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file():
                    yield prefix + entry.name
                elif recursive and entry.is_dir():
                    stack.append((f"{prefix}{entry.name}/", Path(entry.path)))


@dataclass(frozen=True)
class _Unusable:
    """Why an image referenced by questions gives no examples (the detail, when set, names the file)."""

    reason: str
    detail: str = ""


def _image(ctx: SourceContext, path: str | None) -> tuple[str, tuple[int, int]] | _Unusable:
    """(path, size) of an image that loads whole, or why not."""
    if path is None:
        return _Unusable("missing image")
    size = ctx.image_size(path)
    return (path, size) if size else _Unusable(*ctx.image_problem(path))


def _fixed_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value), int(value)
    width, height = value
    return int(width), int(height)


def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as file:
            return json.load(file)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the JSON file: {err}") from err


def _entries(path: Path, key: str) -> list:
    data = _load_json(path)
    if isinstance(data, dict):
        data = data.get(key)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list under {key!r}")
    return data


class _ById:
    """Entries addressed by id, where the id is normally the list position (checked; a table otherwise)."""

    def __init__(self, items: list):
        self.items = items
        self.table: dict | None = None

    def get(self, ident: Any) -> dict | None:
        items = self.items
        if type(ident) is int and 0 <= ident < len(items):
            item = items[ident]
            if type(item) is dict and item.get("id", ident) == ident:
                return item
        if self.table is None:
            self.table = {item["id"]: item for item in items if type(item) is dict and "id" in item}
        item = self.table.get(ident)
        if item is None and isinstance(ident, str) and ident.isdigit():
            item = self.table.get(int(ident))
        return item


def _empty(value: Any) -> bool:
    return value is None or not str(value).strip()


# ------------------------------------------------------------------------------------------------ RSVQA

RSVQA_IMAGE_FOLDERS = ("Images_LR", "Data", "Images", "images")


def _rsvqa_prefix(folder: Path, split: str) -> str:
    suffix = f"_split_{split}_questions.json"
    prefixes = sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))
    if len(prefixes) != 1:
        found = "none" if not prefixes else ", ".join(prefixes)
        raise ValueError(f"rsvqa: {folder}: cannot tell the file prefix for split {split!r} (found {found}); "
                         f"set option `prefix` (LR or USGS)")  # fmt: skip
    return prefixes[0]


@register("rsvqa", options=("extension", "image_size", "images", "prefix"))
def rsvqa(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    prefix = options.get("prefix") or _rsvqa_prefix(ctx.path, ctx.split)
    questions_path = ctx.path / f"{prefix}_split_{ctx.split}_questions.json"
    answers_path = ctx.path / f"{prefix}_split_{ctx.split}_answers.json"
    for path in (questions_path, answers_path):
        if not path.is_file():
            raise FileNotFoundError(f"rsvqa: {path} not found (split {ctx.split!r}, prefix {prefix!r})")
    image_folder = options.get("images") or next(
        (name for name in RSVQA_IMAGE_FOLDERS if (ctx.path / name).is_dir()),
        "Images_LR" if prefix == "LR" else "Data",
    )
    folder = _ImageFolder(ctx.root, f"{ctx.folder}/{image_folder}", options.get("extension", ".tif"))
    fixed = _fixed_size(options.get("image_size"))
    answers = _ById(_entries(answers_path, "answers"))
    questions = _entries(questions_path, "questions")
    name = ctx.rel(questions_path)
    images: dict[Any, Any] = {}  # img_id → (path, size), or a Reject reason when unusable

    for position, question in enumerate(questions):
        if type(question) is not dict:
            yield ctx.reject(f"#{position}", "unreadable question", f"{name}[{position}]: {question!r}")
            continue
        ident = question.get("id", position)
        key = str(ident)
        if not question.get("active", True):
            yield ctx.reject(key, "inactive question", f"{name}[{position}]")
            continue
        text = question.get("question")
        if _empty(text):
            yield ctx.reject(key, "empty text", f"{name}[{position}]: question {text!r}")
            continue
        answer_ids = question.get("answers_ids") or ()
        answer_id = answer_ids[0] if answer_ids else None
        answer = answers.get(answer_id) if answer_id is not None else None
        if answer is None:
            yield ctx.reject(key, "missing answer", f"{name}[{position}]: answers_ids {answer_ids!r}")
            continue
        if not answer.get("active", True):
            yield ctx.reject(key, "inactive answer", f"{name}[{position}]: answer {answer_id}")
            continue
        answer_text = answer.get("answer")
        if _empty(answer_text):
            yield ctx.reject(key, "empty text", f"{name}[{position}]: answer {answer_id} is {answer_text!r}")
            continue
        image_id = question.get("img_id")
        image = images.get(image_id, _UNSEEN)
        if image is _UNSEEN:
            image = images[image_id] = _rsvqa_image(ctx, folder, image_id, fixed)
        if isinstance(image, _Unusable):
            where = image.detail or f"image {image_id!r} in {folder.folder}"
            yield ctx.reject(key, image.reason, f"{name}[{position}]: {where}")
            continue
        yield ctx.example(
            key, "vqa", [image[0]], image[1],
            {"question": text, "answer": str(answer_text), "question_type": question.get("type") or "unknown"},
            question_id=ident, image_id=image_id, answer_id=answer_id,
        )  # fmt: skip


def _rsvqa_image(ctx: SourceContext, folder: _ImageFolder, image_id: Any, fixed) -> tuple | _Unusable:
    image = _image(ctx, None if image_id is None else folder.resolve(f"{image_id}.tif"))
    if isinstance(image, tuple) and fixed and image[1] != fixed:
        (width, height), path = image[1], image[0]
        return _Unusable("unexpected image size", f"{path}: {width}x{height}, not {fixed[0]}x{fixed[1]}")
    return image


# ----------------------------------------------------------------------------------------------- RSIVQA

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]  # fmt: skip
NUMBER_WORDS = {word: n for n, word in enumerate(ONES)}
TENS = {
    word: 10 * n
    for n, word in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], 2)
}
SCENE_QUESTION = re.compile(
    r"what\s+(is|are)\s+the\s+(theme|scene|category|class|type|land\s*use)\b"
    r"|what\s+(kind|type|category|sort)\s+of\s+(scene|place|area|land|image|picture)"
)
LOCATION_QUESTION = re.compile(r"where\b|what\s+is\s+the\s+(location|position)\b")
MISSING_WORD = re.compile(r"\S {2,}\S")


def number_digits(answer: str) -> str | None:
    """Number words as digits: "twenty-two" → "22", "four" → "4".

    None for anything else (digits, "about fifty", "several")."""
    words = answer.strip().lower().replace("-", " ").split()
    if len(words) == 1 and words[0] in NUMBER_WORDS:
        return str(NUMBER_WORDS[words[0]])
    if len(words) == 1 and words[0] in TENS:
        return str(TENS[words[0]])
    if len(words) == 2 and words[0] in TENS and words[1] in NUMBER_WORDS and 0 < NUMBER_WORDS[words[1]] < 10:
        return str(TENS[words[0]] + NUMBER_WORDS[words[1]])
    return None


def rsivqa_question_type(question: str, answer: str) -> str:
    """A coarse type for RSIVQA questions, which carry none (see the module docstring)."""
    text = question.strip().lower()
    if text.startswith("how many"):
        return "count"
    if answer.strip().lower() in ("yes", "no"):
        return "presence"
    if SCENE_QUESTION.match(text):
        return "scene"
    if LOCATION_QUESTION.match(text):
        return "location"
    return "other"


def split_rsivqa_line(line: str) -> tuple[str, str, str] | None:
    """`<image>:<question>?<answer>` split at the first `:` and the last `?`; None when it cannot be."""
    image, colon, rest = line.partition(":")
    question, mark, answer = rest.rpartition("?")
    if not colon or not mark or not image.strip():
        return None
    return image.strip(), question.strip() + "?", answer.strip()


def _karpathy_splits(path: Path) -> dict[str, str]:
    data = _load_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: expected a Karpathy dataset.json with an `images` list")
    return {_stem(str(image["filename"])): str(image["split"]) for image in images}


@register(
    "rsivqa",
    options=(
        "check_images",
        "extension",
        "files",
        "images",
        "keep_missing_object",
        "recursive",
        "split_of_all",
        "splits_from",
        "unlisted_split",
    ),
)
def rsivqa(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    files = options.get("files") or sorted(p.name for p in ctx.path.glob("*.txt"))
    files = [files] if isinstance(files, str) else list(files)
    check_images = options.get("check_images", True)
    images_folder = str(options.get("images", ctx.folder))
    folder = (
        _ImageFolder(ctx.root, images_folder, options.get("extension"), bool(options.get("recursive", False)))
        if check_images
        else None
    )
    splits = _karpathy_splits(ctx.root / options["splits_from"]) if options.get("splits_from") else None
    unlisted_split = options.get("unlisted_split", "train")
    split_of_all = options.get("split_of_all", "train")
    if splits is None and ctx.split != split_of_all:
        raise ValueError(f"rsivqa: split {ctx.split!r} asked for, but without option `splits_from` every line "
                         f"belongs to split {split_of_all!r} (option `split_of_all`)")  # fmt: skip
    owns_orphans = ctx.split == (unlisted_split if splits is not None else split_of_all)
    keep_missing_object = bool(options.get("keep_missing_object", False))
    images: dict[str, Any] = {}  # reference → (path, size), or a Reject reason

    for file in files:
        path = ctx.path / file
        label = ctx.rel(path)
        with path.open(encoding="utf-8-sig") as lines:
            for number, raw in enumerate(lines, 1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                key = f"{label}:{number}"
                parsed = split_rsivqa_line(line)
                if parsed is None:
                    if owns_orphans:
                        yield ctx.reject(key, "unreadable line", line)
                    continue
                reference, question, answer = parsed
                if splits is not None:
                    split = splits.get(_stem(reference))
                    if split is None:
                        if owns_orphans:
                            yield ctx.reject(key, "image not in splits file", f"{reference!r} not in "
                                             f"{options['splits_from']}: {line}")  # fmt: skip
                        continue
                    if split != ctx.split:
                        continue
                if _empty(question.rstrip("?")) or _empty(answer):
                    yield ctx.reject(key, "empty text", line)
                    continue
                if not keep_missing_object and MISSING_WORD.search(question):
                    yield ctx.reject(key, "missing object word", line)
                    continue
                if folder is None:
                    image: Any = (f"{images_folder.strip('/')}/{reference}".lstrip("/"), None)
                else:
                    image = images.get(reference, _UNSEEN)
                    if image is _UNSEEN:
                        image = images[reference] = _image(ctx, folder.resolve(reference))
                if isinstance(image, _Unusable):
                    where = image.detail or f"{reference!r} in {images_folder}"
                    yield ctx.reject(key, image.reason, f"{where}: {line}")
                    continue
                meta: dict[str, Any] = {"image_ref": reference, "file": label, "line": number}
                digits = number_digits(answer)
                if digits is not None:
                    meta["answer_digits"] = digits
                fields = {"question": question, "answer": answer,
                          "question_type": rsivqa_question_type(question, answer)}  # fmt: skip
                yield ctx.example(key, "vqa", [image[0]], image[1], fields, **meta)


# --------------------------------------------------------------------------------------------- FloodNet

FLOODNET_QUESTIONS = {
    "train": ("Questions/Training Question.json", "Questions/Training_Question.json"),
    "val": ("Questions/Valid Question.json", "Questions/Valid_Question.json"),
    "test": ("Questions/Test_Question.json", "Questions/Test Question.json"),
}
FLOODNET_IMAGES = {"train": "Images/Train_Image", "val": "Images/Valid_Image", "test": "Images/Test_Image"}


def _per_split(value: Any, split: str, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        if split not in value:
            raise ValueError(f"floodnet_vqa: option {what!r} names no path for split {split!r}")
        return str(value[split])
    return str(value).replace("{split}", split)


@register("floodnet_vqa", options=("extension", "images", "questions"))
def floodnet_vqa(ctx: SourceContext) -> Iterator[Example | Reject]:
    options = ctx.options
    questions_rel = _per_split(options.get("questions"), ctx.split, "questions")
    if questions_rel is None:
        if ctx.split not in FLOODNET_QUESTIONS:
            raise ValueError(f"floodnet_vqa: no default files for split {ctx.split!r}; set option `questions`")
        candidates = FLOODNET_QUESTIONS[ctx.split]
        questions_rel = next((c for c in candidates if (ctx.path / c).is_file()), candidates[0])
    questions_path = ctx.path / questions_rel
    if not questions_path.is_file():
        raise FileNotFoundError(f"floodnet_vqa: {questions_path} not found (split {ctx.split!r})")
    images_rel = _per_split(options.get("images"), ctx.split, "images") or FLOODNET_IMAGES.get(ctx.split, "Images")
    folder = _ImageFolder(ctx.root, f"{ctx.folder}/{images_rel}", options.get("extension"))
    data = _load_json(questions_path)
    if isinstance(data, list):
        items: Any = ((str(i), entry) for i, entry in enumerate(data))
    elif isinstance(data, dict):
        items = data.items()
    else:
        raise ValueError(f"{questions_path}: expected an object keyed by question id")
    name = ctx.rel(questions_path)
    images: dict[str, Any] = {}

    for ident, entry in items:
        key = str(ident)
        if type(entry) is not dict:
            yield ctx.reject(key, "unreadable question", f"{name}[{key}]: {entry!r}")
            continue
        question, answer, image_id = entry.get("Question"), entry.get("Ground_Truth"), entry.get("Image_ID")
        if _empty(question):
            yield ctx.reject(key, "empty text", f"{name}[{key}]: question {question!r}")
            continue
        if answer is None:
            yield ctx.reject(key, "missing answer", f"{name}[{key}]: no Ground_Truth")
            continue
        if _empty(answer):
            yield ctx.reject(key, "empty text", f"{name}[{key}]: Ground_Truth {answer!r}")
            continue
        if _empty(image_id):
            yield ctx.reject(key, "missing image", f"{name}[{key}]: no Image_ID")
            continue
        image_id = str(image_id)
        image = images.get(image_id, _UNSEEN)
        if image is _UNSEEN:
            image = images[image_id] = _image(ctx, folder.resolve(image_id))
        if isinstance(image, _Unusable):
            yield ctx.reject(key, image.reason, f"{name}[{key}]: {image.detail or f'{image_id!r} in {folder.folder}'}")
            continue
        fields = {"question": str(question), "answer": str(answer),
                  "question_type": str(entry.get("Question_Type") or "unknown")}  # fmt: skip
        yield ctx.example(key, "vqa", [image[0]], image[1], fields, question_id=key, image_id=image_id)
