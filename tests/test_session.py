"""ImageChat, the conversation object shared by `skyeye chat` and `skyeye web`."""

import pytest

from skyeye.data.synth import render_scene
from skyeye.session import ImageChat


@pytest.fixture
def chat(small_model):
    return ImageChat(small_model, render_scene(seed=1, size=64)[0], max_new_tokens=8)


def test_the_streamed_pieces_are_the_recorded_answer_and_turns_build_the_history(chat):
    first = "".join(chat.stream("where is the building?", "grounding"))
    second = "".join(chat.stream("Briefly describe this image.", "caption"))
    assert [turn.assistant for turn in chat.turns] == [first.strip(), second.strip()]
    assert [turn.user for turn in chat.turns] == ["[refer] where is the building?",
                                                  "[caption] Briefly describe this image."]  # fmt: skip
    assert [turn.user for turn in chat.conversation.turns] == [turn.user for turn in chat.turns]
    timings = chat.turns[0].timings
    assert 0 <= timings["first_token_s"] <= timings["total_s"]
    record = chat.to_record()
    assert record["image"] is None and record["image_size"] == [64, 64] and len(record["turns"]) == 2


def test_a_generation_error_reaches_the_caller_and_records_no_turn(chat):
    with pytest.raises(ValueError, match="more than the context"):
        "".join(chat.stream("describe " * 400, "caption"))
    assert chat.turns == [] and chat.conversation.turns == []
    answer = "".join(chat.stream("Briefly describe this image.", "caption"))
    assert [turn.assistant for turn in chat.turns] == [answer.strip()]


def test_reset_and_a_new_image_start_a_new_conversation(chat, tmp_path):
    "".join(chat.stream("Briefly describe this image.", "caption"))
    chat.reset()
    assert chat.turns == [] and chat.conversation.turns == []
    "".join(chat.stream("Briefly describe this image.", "caption"))
    path = tmp_path / "other.png"
    render_scene(seed=2, size=64)[0].resize((80, 48)).save(path)
    chat.open_image(path)
    assert chat.turns == [] and chat.to_record()["image"] == str(path) and chat.image.original_size == (80, 48)
