"""VQA and scene-classification accuracy as the RSVQA protocol counts it: exact match after normalisation.

A generated answer counts as correct when it equals the reference after `normalize_answer`, so "Four." matches
"4" and "The river" matches "river", but "four cars" does not match "4" (no partial credit, as in RSVQA).

Count questions are reported apart: RS-MLLM papers (GeoChat, SkyEyeGPT, ...) leave RSVQA's counting questions
out of their average and overall accuracy, because exact-match counting is near chance for every model and
hides the other types. `vqa_scores` therefore gives AA and OA without them, the count accuracy on its own, and
AA/OA with them for comparison with the RSVQA paper.

RSVQA's own answers are binned where the raw value is too fine to match exactly; `binned` applies the same
bins to a prediction (see `count_bin_lr` and `area_bin_hr`), as an option of `vqa_scores`. The ranges are
those of Lobry et al.'s reference code; its labels read "between 0 and 10", "between 10m2 and 100m2", ...,
while these read "between 1 and 10", "between 11m2 and 100m2", ... (the same whole numbers). Labels matter
only where a reference is already written as a bin.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from skyeye.data.sources.class_names import aliases_of
from skyeye.data.sources.vqa import number_digits

COUNT_TYPE = "count"
_ARTICLES = ("a", "an", "the")
# Hyphens, underscores and slashes join words ("storage-tank"), so they become spaces rather than vanish.
_WORD_JOINERS = re.compile(r"[-_/]")
# Every other punctuation mark is deleted ("1,000" -> "1000", "it's" -> "its"), except a decimal point.
_PUNCTUATION = re.compile(r"(?!(?<=[0-9])\.(?=[0-9]))[^\w\s]")
_LR_COUNT = re.compile(r"[0-9]+")
_HR_AREA = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?m2")


def normalize_answer(text: str) -> str:
    """The form in which answers are compared.

    Rules, in order: lower-case; hyphens, underscores and slashes become spaces; other punctuation is deleted
    (a point between two digits stays, so "2.5" is not read as "25"); runs of whitespace collapse to one space
    and the ends are stripped; a leading "a", "an" or "the" is dropped when a word follows it; an answer that
    is a number in words ("zero".."nineteen", the tens "twenty".."ninety", and "twenty two" style
    compounds) becomes digits, with the converter the RSIVQA data adapter uses, so "Four." -> "4".
    """
    text = _WORD_JOINERS.sub(" ", text.lower())
    words = _PUNCTUATION.sub("", text).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    text = " ".join(words)
    return number_digits(text) or text


def answers_match(prediction: str, reference: str) -> bool:
    """Exact match of the normalised texts."""
    return normalize_answer(prediction) == normalize_answer(reference)


def count_bin_lr(n: int) -> str:
    """RSVQA-LR's bin for a count: 0, 1..10, 11..100, 101..1000, more.

    The RSVQA-LR protocol scores counts by range, not exactly.
    """
    if n < 0:
        raise ValueError(f"a count cannot be negative, got {n}")
    return _range_bin(n, unit="")


def area_bin_hr(m2: float) -> str:
    """RSVQA-HR's bin for an area in square metres: 0, (0, 10], (10, 100], (100, 1000], more.

    Areas are whole numbers in RSVQA-HR, so the ranges read "between 1m2 and 10m2" and so on; a fractional
    area falls in the range whose upper bound it does not exceed.
    """
    if m2 < 0:
        raise ValueError(f"an area cannot be negative, got {m2}")
    return _range_bin(m2, unit="m2")


def _range_bin(value: float, unit: str) -> str:
    """The RSVQA bin label shared by counts and areas: 0, 1..10, 11..100, 101..1000, more (with `unit`)."""
    if value == 0:
        return f"0{unit}"
    for low, high in ((1, 10), (11, 100), (101, 1000)):
        if value <= high:
            return f"between {low}{unit} and {high}{unit}"
    return f"more than 1000{unit}"


def binned(answer: str, question_type: str, dataset: str) -> str:
    """The normalised answer, binned like the reference answers of `dataset` where it has bins.

    Bins apply to counts of "rsvqa-lr" (type "count", `count_bin_lr`) and areas of "rsvqa-hr" (type "area",
    `area_bin_hr`, written like "1234m2"). Text that is not a plain number (with "m2" for areas) is returned
    normalised but unbinned, so an answer already written as a bin ("more than 1000") stays as it is.
    """
    text = normalize_answer(answer)
    if dataset == "rsvqa-lr" and question_type == COUNT_TYPE and _LR_COUNT.fullmatch(text):
        return count_bin_lr(int(text))
    if dataset == "rsvqa-hr" and question_type == "area" and (match := _HR_AREA.fullmatch(text)):
        return area_bin_hr(float(match[1]))
    return text


def _check_items(items: Sequence[Mapping], fields: Iterable[str]) -> None:
    if not items:
        raise ValueError("no items to score")
    for index, item in enumerate(items):
        for field in fields:
            if not isinstance(item.get(field), str):
                raise ValueError(f"item {index} needs a text {field!r}, got {item.get(field)!r}")


def _accuracy(hits: list[bool]) -> dict:
    return {"accuracy": sum(hits) / len(hits), "n": len(hits)}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def vqa_scores(items: Sequence[Mapping], dataset: str | None = None) -> dict:
    """Accuracies (fractions in 0..1) per question type, averaged (AA) and overall (OA).

    Each item has `prediction`, `answer` and `question_type`. With `dataset` ("rsvqa-lr" or "rsvqa-hr")
    predictions and answers are compared through `binned`. Returns `per_type` (every type, count included:
    {"accuracy", "n"}), `AA` and `OA` without count questions (None when there are only count questions),
    `count` (absent without count questions) and `AA_with_count` / `OA_with_count` over every question.
    """
    _check_items(items, ("prediction", "answer", "question_type"))
    hits_by_type: dict[str, list[bool]] = defaultdict(list)
    for item in items:
        kind = item["question_type"]
        if dataset is None:
            hit = answers_match(item["prediction"], item["answer"])
        else:
            hit = binned(item["prediction"], kind, dataset) == binned(item["answer"], kind, dataset)
        hits_by_type[kind].append(hit)
    per_type = {kind: _accuracy(hits) for kind, hits in hits_by_type.items()}
    rated = [kind for kind in per_type if kind != COUNT_TYPE]
    scores = {
        "per_type": per_type,
        "AA": _mean([per_type[kind]["accuracy"] for kind in rated]),
        "OA": _mean([hit for kind in rated for hit in hits_by_type[kind]]),
        "AA_with_count": _mean([result["accuracy"] for result in per_type.values()]),
        "OA_with_count": _mean([hit for hits in hits_by_type.values() for hit in hits]),
    }
    if COUNT_TYPE in per_type:
        scores["count"] = per_type[COUNT_TYPE]
    return scores


def normalize_scene_name(name: str) -> str:
    """Scene class names as the datasets and the model write them: "Storage_tanks." -> "storage tanks".

    Lower-case, underscores and hyphens become spaces, whitespace collapses, trailing punctuation goes.
    """
    words = re.sub(r"[_-]", " ", name.lower()).split()
    return re.sub(r"\W+$", "", " ".join(words))


def _scene_key(name: str) -> str:
    # Datasets disagree on spaces inside class names (UCM "baseballdiamond", NWPU "baseball_diamond"), and
    # the model may follow either, so matching ignores them.
    return normalize_answer(name).replace(" ", "")


def scene_accuracy(items: Sequence[Mapping]) -> dict:
    """Scene-classification accuracy over items with `prediction` and `answer` (the class name).

    An answer is right when it is the class name up to case, punctuation, a leading article and the spaces
    inside the name (`normalize_answer`): "The airport." and "StorageTanks" count, while an answer naming
    another class, or the class inside a sentence ("an airport with planes"), does not.

    Returns {"accuracy", "n", "per_class"}, `per_class` keyed by the normalised reference class name. When
    every item also has `classes` (the list its prompt offered), `off_list` counts the answers that name none of
    them, the most frequent first: a model that answers "stream" to a list holding "river" fails to follow the
    list, a different fault from naming the wrong listed class. Its `another_name` counts those that are another
    name of the right class (class_names.ALIASES: "woodland" for forest): the scene was recognised, not named
    as asked.
    """
    _check_items(items, ("prediction", "answer"))
    hits_by_class: dict[str, list[bool]] = defaultdict(list)
    listed = all("classes" in item for item in items)
    off_list: Counter = Counter()
    another_name = 0
    for item in items:
        said, answer = _scene_key(item["prediction"]), normalize_scene_name(item["answer"])
        hits_by_class[answer].append(said == _scene_key(answer))
        if listed and said not in {_scene_key(name) for name in item["classes"]}:
            off_list[normalize_scene_name(item["prediction"])] += 1
            another_name += said in {_scene_key(alias) for alias in aliases_of(answer)}
    every = [hit for hits in hits_by_class.values() for hit in hits]
    scores = {
        **_accuracy(every),
        "per_class": {name: _accuracy(hits)["accuracy"] for name, hits in hits_by_class.items()},
    }
    if listed:
        scores["off_list"] = {
            "count": off_list.total(), "another_name": another_name, "answers": dict(off_list.most_common()),
        }  # fmt: skip
    return scores
