"""Examples → instruction records: phrasing pools, task identifiers and boxes as grid text.

Each record's phrasing is drawn from a pool with a generator seeded by (seed, record id), so a build is
reproducible and does not depend on the order sources are read in. Boxes in text use the 0–100 grid
(`skyeye.boxes`); the pixel boxes go to `meta` so evaluation can score in pixels.

Which records an example can give (the recipe picks the tasks per source):

| example kind | tasks                                                                    |
|--------------|--------------------------------------------------------------------------|
| caption      | caption (one image or video frames)                                      |
| vqa          | vqa                                                                      |
| grounding    | grounding ([refer] expression → box), identify ([identify] box → expression) |
| regions      | detection, identify, grounding, vqa (counting / presence), conversation  |
| scene        | scene                                                                    |

Conversations mix, over 2–5 turns about one image, the turns its annotations can answer: caption, counting,
presence (yes and no), grounding of a class present exactly once, referring expression generation and
phrase grounding; images with captions only get short caption, alternative caption and detailed description.
Questions other sources ask about the image (the recipe's `follow_ups`) join as up to FOLLOW_UP_QUESTIONS
turns, so a conversation can go from a description to a question about it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from skyeye.boxes import format_box, format_phrase, pixel_to_grid
from skyeye.class_lists import SCENE, SCENE_PHRASINGS
from skyeye.data.record import Record
from skyeye.data.sources.base import Example, Reject
from skyeye.prompts import TASKS as TASK_IDENTIFIERS

CAPTION = [
    "Briefly describe this image.",
    "Give a short description of this remote sensing image.",
    "Describe this image in one sentence.",
    "Write a short caption for this aerial image.",
    "What does this image show? Answer in one sentence.",
]
VIDEO_CAPTION = [
    "briefly describe the video frame image",
    "Briefly describe what happens in these UAV video frames.",
    "Give a short caption of this aerial video.",
]
DETAILED = ["Describe this image in detail.", "Tell me more about this scene.", "Give a detailed description of it."]
ANOTHER_CAPTION = ["Describe this image in another way.", "Can you say it differently?"]
VQA = ["{q}", "Based on the image, respond to this question with a short answer: {q}"]
REFER = [
    "{x}",
    "give me the location of {x}",
    "where is {x} ?",
    "from this image, tell me the location of {x}",
    "the location of {x} is",
    "could you tell me the location for {x} ?",
    "where can I locate {x} ?",
]
IDENTIFY = [
    "{box}",
    "what object is in this location {box}",
    "identify the object present at this location {box}",
    "what is it in {box}",
    "describe this object in {box}",
    "this {box} is",
    "the object in {box} is",
]
COUNT = [
    "How many {plural} are there in the image?",
    "Count the {plural} in this image.",
    "How many {plural} can you see?",
]
PRESENCE = [
    "Is there a {name} in the image?",
    "Does this image contain any {plural}?",
    "Are there {plural} in this image?",
]
SCENE_OPEN = ["What type of scene is this?", "What is the theme of this picture?", "What is this area used for?"]
FEWEST_CLASSES = 4
FOLLOW_UP_QUESTIONS = 2  # of an image's questions, so they do not crowd out its captions
UNTAGGED_QUESTIONS = 0.3
# Questions users ask first, with no task identifier; conversations start with them half the time.
GENERAL = [
    "What can you tell me about this image?",
    "What is in this picture?",
    "What do you see?",
    "Describe what you see.",
    "What does this image show?",
]
# Names for "no" answers to presence questions: common remote-sensing objects, never those in the image.
ABSENT_CANDIDATES = (
    "plane", "ship", "storage tank", "vehicle", "bridge", "harbor", "tennis court", "basketball court",
    "swimming pool", "ground track field", "baseball field", "roundabout", "windmill", "chimney", "dam", "stadium",
)  # fmt: skip


def plural(name: str) -> str:
    if name.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def tag(task: str, text: str) -> str:
    return f"{TASK_IDENTIFIERS[task]} {text}"


def question(rng: random.Random, text: str) -> str:
    """A question with the [vqa] identifier, or without it as chat users ask (UNTAGGED_QUESTIONS of the time):
    a model that met questions only behind [vqa] answers an untagged one with a caption."""
    return tag("vqa", text) if rng.random() >= UNTAGGED_QUESTIONS else text


class Unusable(Exception):
    """An example that cannot give a record for this task; the message is the countable reason."""


def make_record(example: Example, task: str, seed: int = 0) -> Record | Reject:
    record_id = f"{example.source}/{example.split}/{task}/{example.key}"
    rng = random.Random(f"{seed}:{record_id}")
    builder = BUILDERS.get((example.kind, task))
    if builder is None:
        return Reject(example.source, example.split, example.key, f"task {task} not available for {example.kind}")
    try:
        turns, meta = builder(example, rng)
    except Unusable as reason:
        return Reject(example.source, example.split, example.key, str(reason))
    size = list(example.image_size) if example.image_size else None
    return Record(record_id, example.source, example.split, task, example.images, size, turns,
                  {**example.meta, **meta}).validate(record_id)  # fmt: skip


def _text(value: object) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    if not text:
        raise Unusable("empty text")
    return text


def _grid(example: Example, box: list[float]) -> str:
    if not example.image_size:
        raise Unusable("no image size")
    return format_box(pixel_to_grid(box, *example.image_size))


def _caption(example: Example, rng: random.Random):
    pool = VIDEO_CAPTION if len(example.images) > 1 else CAPTION
    return [{"user": tag("caption", rng.choice(pool)), "assistant": _text(example.fields["caption"])}], {}


def _vqa(example: Example, rng: random.Random):
    fields = example.fields
    asked = _text(fields["question"])
    answer = _text(fields["answer"])
    user = question(rng, rng.choice(VQA).format(q=asked))
    return [{"user": user, "assistant": answer}], {"question_type": fields.get("question_type", "")}


def _grounding(example: Example, rng: random.Random):
    expression, box = _text(example.fields["expression"]), example.fields["box"]
    user = tag("refer", rng.choice(REFER).format(x=expression))
    return [{"user": user, "assistant": _grid(example, box)}], {"boxes": [box]}


def _identify_expression(example: Example, rng: random.Random):
    expression, box = _text(example.fields["expression"]), example.fields["box"]
    user = tag("identify", rng.choice(IDENTIFY).format(box=_grid(example, box)))
    return [{"user": user, "assistant": expression}], {"boxes": [box]}


def _objects(example: Example) -> list[dict]:
    objects = example.fields.get("objects") or []
    if not objects:
        raise Unusable("no objects")
    return objects


def objects_by_name(objects: list[dict]) -> dict[str, list[list[float]]]:
    """{"name", "box"} objects → each name's boxes, in the order given."""
    groups: dict[str, list[list[float]]] = {}
    for obj in objects:
        groups.setdefault(obj["name"], []).append(obj["box"])
    return groups


def _detection_turn(example: Example, rng: random.Random, groups) -> tuple[dict, dict]:
    name = rng.choice(sorted(groups))
    phrase = name if len(groups[name]) == 1 else plural(name)
    boxes = groups[name]
    grid = [pixel_to_grid(b, *example.image_size) for b in boxes]
    answer = format_phrase(phrase, grid)
    return {"user": tag("detection", phrase), "assistant": answer}, {"boxes": boxes, "phrase": phrase}


def _detection(example: Example, rng: random.Random):
    if not example.image_size:
        raise Unusable("no image size")
    turn, meta = _detection_turn(example, rng, objects_by_name(_objects(example)))
    return [turn], meta


def _identify_object(example: Example, rng: random.Random):
    obj = rng.choice(_objects(example))
    user = tag("identify", rng.choice(IDENTIFY).format(box=_grid(example, obj["box"])))
    return [{"user": user, "assistant": obj["name"]}], {"boxes": [obj["box"]]}


def _unique_grounding_turn(example: Example, rng: random.Random, groups) -> tuple[dict, dict]:
    unique = sorted(name for name, boxes in groups.items() if len(boxes) == 1)
    if not unique:
        raise Unusable("no object class present exactly once")
    name = rng.choice(unique)
    user = tag("refer", rng.choice(REFER).format(x=f"the {name}"))
    return {"user": user, "assistant": _grid(example, groups[name][0])}, {"boxes": groups[name]}


def _region_grounding(example: Example, rng: random.Random):
    turn, meta = _unique_grounding_turn(example, rng, objects_by_name(_objects(example)))
    return [turn], meta


def _count_turn(rng: random.Random, groups) -> dict:
    name = rng.choice(sorted(groups))
    text = rng.choice(COUNT).format(plural=plural(name))
    return {"user": question(rng, text), "assistant": str(len(groups[name]))}


def _presence_turn(rng: random.Random, groups) -> dict:
    if rng.random() < 0.5:
        name, answer = rng.choice(sorted(groups)), "yes"
    else:
        name, answer = rng.choice([n for n in ABSENT_CANDIDATES if n not in groups]), "no"
    text = rng.choice(PRESENCE).format(name=name, plural=plural(name))
    return {"user": question(rng, text), "assistant": answer}


def _region_vqa(example: Example, rng: random.Random):
    groups = objects_by_name(_objects(example))
    if rng.random() < 0.5:
        return [_count_turn(rng, groups)], {"question_type": "count"}
    return [_presence_turn(rng, groups)], {"question_type": "presence"}


def _conversation(example: Example, rng: random.Random):
    captions = [_text(c) for c in example.fields.get("captions") or [] if str(c).strip()]
    objects = example.fields.get("objects") or []
    if not captions and not objects:
        raise Unusable("no objects or captions")
    opening: list[dict] = []  # the description comes first: later turns ("say it differently") refer to it
    candidates: list[Callable[[], dict]] = []
    meta: dict = {}
    if captions:
        distinct = list(dict.fromkeys(captions))
        first = rng.choice(GENERAL) if rng.random() < 0.5 else tag("caption", rng.choice(CAPTION))
        opening.append({"user": first, "assistant": distinct[0]})
        if len(distinct) > 1:
            candidates.append(lambda: {"user": rng.choice(ANOTHER_CAPTION), "assistant": distinct[1]})
            candidates.append(lambda: {"user": rng.choice(DETAILED), "assistant": " ".join(_sentences(distinct))})
    questions = example.fields.get("questions") or []
    for asked in rng.sample(questions, min(len(questions), FOLLOW_UP_QUESTIONS)):
        candidates.append(lambda asked=asked: {"user": question(rng, asked["question"]), "assistant": asked["answer"]})
    if objects and example.image_size:
        groups = objects_by_name(objects)
        candidates += [lambda: _count_turn(rng, groups), lambda: _presence_turn(rng, groups)]
        candidates.append(lambda: _identify_object(example, rng)[0][0])
        candidates.append(lambda: _detection_turn(example, rng, groups)[0])
        if any(len(b) == 1 for b in groups.values()):
            candidates.append(lambda: _unique_grounding_turn(example, rng, groups)[0])
        meta["objects"] = objects
    rng.shuffle(candidates)
    count = min(len(opening) + len(candidates), rng.randint(2, 5))
    if count < 2:
        raise Unusable("too little annotation for a conversation")
    return opening + [make() for make in candidates[: count - len(opening)]], meta


def _sentences(captions: list[str]) -> list[str]:
    return [c if c.endswith((".", "!", "?")) else c + "." for c in captions]


def _region_caption(example: Example, rng: random.Random):
    captions = example.fields.get("captions") or []
    if not captions:
        raise Unusable("no captions")
    return [{"user": tag("caption", rng.choice(CAPTION)), "assistant": _text(rng.choice(captions))}], {}


def _scene(example: Example, rng: random.Random):
    label, classes = _text(example.fields["label"]), list(example.fields["classes"])
    if label not in classes:
        raise Unusable("label not among the classes")
    if rng.random() < 0.1:
        return [{"user": question(rng, rng.choice(SCENE_OPEN)), "assistant": label}], {"label": label}
    others = [name for name in classes if name != label]
    shown = rng.sample(others, rng.randint(min(len(others), FEWEST_CLASSES - 1), len(others))) + [label]
    rng.shuffle(shown)
    template = SCENE if rng.random() < 0.5 else rng.choice(SCENE_PHRASINGS)
    return [{"user": question(rng, template.format(classes=", ".join(shown))), "assistant": label}], {"label": label}


BUILDERS = {
    ("caption", "caption"): _caption,
    ("vqa", "vqa"): _vqa,
    ("grounding", "grounding"): _grounding,
    ("grounding", "identify"): _identify_expression,
    ("regions", "detection"): _detection,
    ("regions", "identify"): _identify_object,
    ("regions", "grounding"): _region_grounding,
    ("regions", "vqa"): _region_vqa,
    ("regions", "conversation"): _conversation,
    ("regions", "caption"): _region_caption,
    ("scene", "scene"): _scene,
}  # fmt: skip
