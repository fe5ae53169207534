"""Scene questions that list the classes to answer with, in the phrasings training asks them, and `listed_classes`,
which reads the list back out of such a question so that generation can keep the answer to one of its names
(`skyeye.model.listed_answers`): the question itself asks for "the above category word or phrase", and a small
model otherwise drifts to a class name of its training that the list does not hold ("parking" for "parking lot").
"""

from __future__ import annotations

import re

from skyeye.prompts import identifier_of

# The standard scene-classification prompt (GeoChat's, used by SkyEyeGPT's evaluation); evaluation asks it.
SCENE = (
    "Classify the image within one of the given classes: {classes}. Answer it using the above category word or phrase."
)
# Training asks it half the time and otherwise in other words, over a shuffled sample of the classes, so the
# model learns to pick from whatever list it is given rather than one question about one fixed list.
SCENE_PHRASINGS = [
    "Which of these scene classes does the image belong to: {classes}? Answer with one class.",
    "Pick the category of this remote sensing image from: {classes}.",
    "Classes: {classes}. Which class best describes this image?",
    "What kind of scene is this? Choose one of: {classes}.",
    "Categorize this aerial image as one of {classes}. Reply with the category name only.",
]


def _pattern(template: str) -> re.Pattern:
    before, after = template.split("{classes}")
    return re.compile(f"{re.escape(before)}(?P<classes>.+?){re.escape(after)}", re.IGNORECASE)


PATTERNS = [_pattern(template) for template in [SCENE, *SCENE_PHRASINGS]]


def _names(text: str) -> list[str] | None:
    """The comma-separated names of `text`, each with its spaces collapsed; None unless two or more, none empty."""
    names = [" ".join(name.split()) for name in text.split(",")]
    return names if len(names) >= 2 and all(names) else None


def class_list_question(names: str) -> str:
    """The standard class-list question over comma-separated `names` (a map's legend); ValueError naming what is
    wrong when fewer than two names are given or one is empty."""
    listed = _names(names)
    if listed is None:
        raise ValueError(f"class list {names!r}: give two or more comma-separated class names, none of them empty")
    return SCENE.format(classes=", ".join(listed))


def listed_classes(question: str) -> list[str] | None:
    """The class names a question in one of the class-list phrasings offers (with or without a task identifier),
    in its order; None for any other question or a list of fewer than two names."""
    text = " ".join(question.split())  # any run of spaces or line breaks as one space, in names too
    identifier = identifier_of(text)
    if identifier is not None:
        text = text[len(identifier) :].strip()
    for pattern in PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return _names(match["classes"])
    return None
