"""The benchmark suites (configs/eval/suites.yaml): which native split to read and how to ask about it.

A suite turns the adapter's examples into evaluation items, each with a fixed prompt (the paper's, so runs
compare) and the reference the metric needs. Prompts are deterministic: no instruction pool is sampled.
Object annotations (NWPU VHR-10, the synthetic scenes) give one grounding item per object whose class occurs
once in its image, "[refer] the {class}", scored per class too; a suite with `objects: repeated` asks instead
for the objects of repeated classes that a place or size singles out ("the leftmost ship", "the largest tank":
`singled_out`).
A suite with an `opening` asks it first about each image and keeps the model's own answer in the conversation;
its items then follow without a task identifier, as a chat user's next question does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from skyeye.boxes import box_area
from skyeye.class_lists import SCENE
from skyeye.settings import ConfigError, build, read_yaml_mapping

if TYPE_CHECKING:
    from skyeye.data.sources.base import Example, Reject

METRICS = ("captioning", "vqa", "grounding", "scene", "reg")
OBJECTS = ("unique", "repeated")  # which annotated objects a grounding suite asks about
# How an object of a repeated class is named when its box lies wholly beyond the others', per axis and end.
ENDS = (("the leftmost {name}", "the rightmost {name}"), ("the topmost {name}", "the bottommost {name}"))
LARGEST_RATIO = 1.5  # "the largest" only where no other box of the class comes close in area
RENDERING_ADAPTERS = ("synthetic",)  # they write their data under the root rather than read it there
CAPTION_PROMPT = "Briefly describe this image."


@dataclass
class Layout:
    adapter: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    metric: str
    split: str
    layouts: list[Layout]
    dataset: str | None = None  # selects the RSVQA answer bins (rsvqa-lr counts, rsvqa-hr areas)
    objects: str = "unique"  # grounding of annotated objects: OBJECTS
    opening: str | None = None  # a first question whose (own) answer precedes every item's
    paper: dict[str, float] = field(default_factory=dict)

    def layout_under(self, root: Path) -> Layout:
        for layout in self.layouts:
            if (root / layout.path).exists() or layout.adapter in RENDERING_ADAPTERS:
                return layout
        tried = ", ".join(str(root / layout.path) for layout in self.layouts)
        raise FileNotFoundError(f"suite {self.name}: no data found under --data-root {root} (looked for {tried})")


@dataclass
class Item:
    """One question of a suite: `reference` holds what its metric compares the answer with."""

    id: str
    images: list[str]  # relative to the data root
    prompt: str
    task: str | None
    reference: dict[str, Any]


def suites_file() -> Path:
    return Path(str(resources.files("skyeye") / "configs" / "eval" / "suites.yaml"))


def suite_names() -> list[str]:
    """The suites' names, without loading the data adapters (for the command line's help)."""
    return list(read_yaml_mapping(suites_file(), "suites file"))


def load_suites(path: Path | None = None) -> dict[str, Suite]:
    from skyeye.data.sources.base import ADAPTER_OPTIONS, ADAPTERS

    path = path or suites_file()
    data = read_yaml_mapping(path, "suites file")
    suites = {}
    for name, body in data.items():
        suite = build(Suite, {"name": name, **(body or {})}, f"{path}: {name}")
        if suite.metric not in METRICS:
            raise ConfigError(f"{path}: {name}.metric {suite.metric!r} is not one of {list(METRICS)}")
        if suite.objects not in OBJECTS or (suite.objects != "unique" and suite.metric != "grounding"):
            raise ConfigError(f"{path}: {name}.objects {suite.objects!r}: one of {list(OBJECTS)}, for grounding")
        for layout in suite.layouts:
            if layout.adapter not in ADAPTERS:
                raise ConfigError(f"{path}: {name}: unknown adapter {layout.adapter!r}")
            unknown = set(layout.options) - ADAPTER_OPTIONS[layout.adapter]
            if unknown:
                raise ConfigError(f"{path}: {name}: adapter {layout.adapter} reads no option(s) {sorted(unknown)}")
        suites[name] = suite
    return suites


def read_items(suite: Suite, root: Path, split: str | None = None) -> tuple[list[Item], list[Reject]]:
    """The suite's items from the native files under `root`, and what the adapter could not read."""
    from skyeye.data.sources.base import ADAPTERS, Reject, SourceContext

    layout = suite.layout_under(root)
    split = split or suite.split
    context = SourceContext(root, layout.path, suite.name, split, dict(layout.options))
    examples, rejects = [], []
    for entry in ADAPTERS[layout.adapter](context):
        (rejects if isinstance(entry, Reject) else examples).append(entry)
    if suite.metric == "grounding":
        items = _grounding_items(examples, suite.objects)
    else:
        items = ITEM_BUILDERS[suite.metric](examples)
    if suite.opening:
        items = [replace(item, task=None) for item in items]
    return items, rejects


def _caption_items(examples: list[Example]) -> list[Item]:
    """All captions of one image (or video) become the references of one item."""
    by_images: dict[tuple[str, ...], Item] = {}
    for example in examples:
        key = tuple(example.images)
        if key not in by_images:
            by_images[key] = Item(example.key.split("#")[0], list(key), CAPTION_PROMPT, "caption",
                                  {"references": []})  # fmt: skip
        by_images[key].reference["references"].append(example.fields["caption"])
    return list(by_images.values())


def _vqa_items(examples: list[Example]) -> list[Item]:
    return [
        Item(example.key, example.images, example.fields["question"], "vqa",
             {"answer": example.fields["answer"], "question_type": example.fields["question_type"]})
        for example in examples
    ]  # fmt: skip


def _grounding_items(examples: list[Example], objects: str) -> list[Item]:
    items = []
    for example in examples:
        if example.kind == "grounding":
            expression, box = example.fields["expression"], example.fields["box"]
            reference = {"box": box, "image_size": list(example.image_size), "expression": expression}
            items.append(Item(example.key, example.images, expression, "grounding", reference))
        else:
            items += _object_items(example, alone=objects == "unique")
    return items


def _object_items(example: Example, alone: bool) -> list[Item]:
    """The objects of a regions example that a phrase singles out, asked by that phrase: those alone in their
    class ("the ship") or those of a repeated class ("the leftmost ship"). Other objects of a repeated class
    have no single right box, so they are not asked."""
    return [
        Item(f"{example.key}#{obj.expression.removeprefix('the ')}", example.images, obj.expression, "grounding",
             {"box": obj.box, "image_size": list(example.image_size), "expression": obj.expression,
              "class": obj.name})
        for obj in singled_out(example.fields["objects"])
        if obj.alone == alone
    ]  # fmt: skip


class SingledOut(NamedTuple):
    name: str  # the object's class
    expression: str  # "the bridge", "the leftmost ship"
    box: list[float]  # in pixels
    alone: bool  # the only object of its class in the image


def singled_out(objects: list[dict]) -> list[SingledOut]:
    """Every object of `objects` ({"name", "box"} in pixels) that a phrase picks out from the others in its image:
    the only one of its class, or the one whose box lies wholly beyond the others of its class along an axis, or
    whose area is LARGEST_RATIO times theirs."""
    from skyeye.data.instructions import objects_by_name

    found = []
    for name, boxes in sorted(objects_by_name(objects).items()):
        if len(boxes) == 1:
            found.append(SingledOut(name, f"the {name}", boxes[0], True))
            continue
        for axis, (near, far) in enumerate(ENDS):  # x, then y; a box (x1, y1, x2, y2) spans [axis] to [axis + 2]
            first = min(boxes, key=lambda box: box[axis + 2])
            if all(first[axis + 2] <= other[axis] for other in boxes if other is not first):
                found.append(SingledOut(name, near.format(name=name), first, False))
            last = max(boxes, key=lambda box: box[axis])
            if all(last[axis] >= other[axis + 2] for other in boxes if other is not last):
                found.append(SingledOut(name, far.format(name=name), last, False))
        by_area = sorted(boxes, key=box_area)
        if box_area(by_area[-1]) >= LARGEST_RATIO * box_area(by_area[-2]):
            found.append(SingledOut(name, f"the largest {name}", by_area[-1], False))
    return found


def _reg_items(examples: list[Example]) -> list[Item]:
    """Referring expression generation: box → expression; every expression of the same box is a reference."""
    from skyeye.boxes import format_box, pixel_to_grid

    by_region: dict[tuple, Item] = {}
    for example in examples:
        box = pixel_to_grid(example.fields["box"], *example.image_size)
        key = (tuple(example.images), box)
        if key not in by_region:
            by_region[key] = Item(example.key, example.images, f"this {format_box(box)} is", "identify",
                                  {"references": []})  # fmt: skip
        by_region[key].reference["references"].append(example.fields["expression"])
    return list(by_region.values())


def _scene_items(examples: list[Example]) -> list[Item]:
    return [
        Item(example.key, example.images, SCENE.format(classes=", ".join(example.fields["classes"])), "scene",
             {"answer": example.fields["label"], "classes": list(example.fields["classes"])})
        for example in examples
    ]  # fmt: skip


ITEM_BUILDERS = {"captioning": _caption_items, "vqa": _vqa_items, "scene": _scene_items, "reg": _reg_items}
