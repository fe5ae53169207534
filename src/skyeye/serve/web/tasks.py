"""The tasks the web app offers, and how a task plus what the user typed becomes the question asked.

Each task maps onto a task name of `skyeye.prompts` (which owns the identifiers). Region tasks take a box
typed in pixels of the uploaded image (`x1, y1, x2, y2`) or already on the grid (`{<x1><y1><x2><y2>}`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skyeye.boxes import format_box, parse_boxes, pixel_to_grid
from skyeye.class_lists import class_list_question


@dataclass(frozen=True)
class WebTask:
    task: str  # a task name of skyeye.prompts.TASKS
    hint: str  # shown in the empty question box
    default: str = ""  # asked when the question box is left empty
    region_template: str | None = None  # region tasks: the question, with {box} for the grid box
    takes_classes: bool = False  # typed comma-separated names become the class-list question over them


WEB_TASKS: dict[str, WebTask] = {
    "Free chat": WebTask("chat", "Ask anything about the image"),
    "Caption": WebTask("caption", "Leave empty for a short caption", "Briefly describe this image."),
    "Visual question answering": WebTask("vqa", "e.g. Are there any planes in this image?"),
    "Grounding": WebTask("grounding", "A phrase to find, e.g. the building next to the road"),
    "Referring expression": WebTask("identify", "A box in pixels: x1, y1, x2, y2", region_template="{box}"),
    "Region description": WebTask(
        "identify", "A box in pixels: x1, y1, x2, y2", region_template="describe this object in {box}"
    ),
    "Scene classification": WebTask(
        "scene",
        "Leave empty to ask for the scene class, or list the classes to choose from: forest, river, farmland",
        "What is the theme of this picture?",
        takes_classes=True,
    ),
}

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
MAX_QUESTION_CHARS = 2000  # far beyond any real question; keeps a pasted book from being tokenized


def question_for(label: str, typed: str, width: int, height: int) -> tuple[str, str]:
    """(question text, task name) for the task called `label`; raises ValueError saying what to type."""
    if label not in WEB_TASKS:
        raise ValueError(f"unknown task {label!r}; tasks: {', '.join(WEB_TASKS)}")
    spec = WEB_TASKS[label]
    typed = typed.strip()
    if len(typed) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question is {len(typed)} characters long; at most {MAX_QUESTION_CHARS} are accepted")
    if spec.region_template is not None:
        return spec.region_template.format(box=_region(typed, width, height)), spec.task
    if spec.takes_classes and _is_name_list(typed):
        return class_list_question(typed), spec.task
    question = typed or spec.default
    if not question:
        raise ValueError(f"type a question for {label.lower()}")
    return question, spec.task


def _is_name_list(typed: str) -> bool:
    """Whether `typed` lists names ("forest, river, farmland") rather than asking a question or saying a sentence,
    which may hold commas too."""
    return "," in typed and not re.search(r"[?.!:]", typed) and all(len(name.split()) <= 4 for name in typed.split(","))


def _region(typed: str, width: int, height: int) -> str:
    grid = parse_boxes(typed)
    if grid:
        return format_box(grid[0])
    numbers = [float(n) for n in _NUMBER.findall(typed)]
    if len(numbers) != 4:
        raise ValueError(
            f"give the region as four pixel coordinates x1, y1, x2, y2 (got {typed!r}), e.g. 10, 20, 120, 90"
        )
    x1, y1, x2, y2 = numbers
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(
            f"the region ({x1:g}, {y1:g}, {x2:g}, {y2:g}) must have x1 < x2 and y1 < y2 and lie inside the "
            f"{width} x {height} image"
        )
    return format_box(pixel_to_grid((x1, y1, x2, y2), width, height))
