"""A question that lists the classes to answer with gets one of them (skyeye.class_lists, skyeye.model.listed_answers).

The model here is the untrained stand-in `small_model`: what is tested is the constraint around it, which must hold
whatever the weights say."""

import numpy as np
import pytest
from PIL import Image

from skyeye.class_lists import SCENE, SCENE_PHRASINGS, listed_classes
from skyeye.model.answer import ConversationCache, continue_conversation

NAMES = ["bare land", "parking lot", "storage tanks", "tennis court", "river"]


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (60, 60, 3), dtype=np.uint8))


@pytest.mark.parametrize("template", [SCENE, *SCENE_PHRASINGS])
def test_the_class_list_is_read_back_from_every_phrasing_training_asks(template):
    question = template.format(classes=", ".join(NAMES))
    assert listed_classes(question) == NAMES
    assert listed_classes(f"[vqa] {question}") == NAMES, "with a task identifier"
    assert listed_classes("  " + question.lower().replace(" ", "  ") + " ") == NAMES, "case and spacing are free"


def test_other_questions_list_no_classes():
    assert listed_classes("What is in this picture?") is None
    assert listed_classes("[vqa] Is there a river in the image?") is None
    assert listed_classes(SCENE.format(classes="river")) is None, "one name is no choice"
    assert listed_classes(SCENE.format(classes="river, , forest")) is None, "an empty name"


def test_answers_to_class_lists_are_listed_names_and_other_questions_are_left_alone(small_model):
    images = [_image(seed) for seed in range(4)]
    questions = [
        SCENE.format(classes=", ".join(NAMES)),
        "[vqa] " + SCENE_PHRASINGS[1].format(classes=", ".join(reversed(NAMES))),
        "what is in the image?",
        SCENE_PHRASINGS[3].format(classes="harbor, meadow"),
    ]
    free = small_model.ask_many(images, questions, max_new_tokens=12, listed_only=False)
    assert any(answer.text not in (listed_classes(q) or []) for answer, q in zip(free, questions[:2], strict=True)), (
        "the untrained stand-in says other things when free, or this test would show nothing"
    )
    for beams in (1, 3):
        listed = small_model.ask_many(images, questions, max_new_tokens=12, num_beams=beams)
        assert listed[0].text in NAMES and listed[1].text in NAMES and listed[3].text in ("harbor", "meadow")
        free_again = small_model.ask_many(images, questions, max_new_tokens=12, num_beams=beams, listed_only=False)
        assert listed[2].text == free_again[2].text, "a question without a list answers as without the constraint"
    sampled = small_model.ask_many(images, questions, max_new_tokens=12, do_sample=True, temperature=2.0)
    assert sampled[0].text in NAMES and sampled[3].text in ("harbor", "meadow")


def test_a_chat_turn_that_lists_classes_answers_with_one_of_them(small_model):
    cache = ConversationCache(_image(7))
    first = continue_conversation(small_model, cache, "what is in the image?", max_new_tokens=8)
    second = continue_conversation(small_model, cache, SCENE.format(classes=", ".join(NAMES)), None,
                                   first.conversation, max_new_tokens=12)  # fmt: skip
    assert second.text in NAMES
