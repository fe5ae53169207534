"""ImageChat, the conversation object shared by `skyeye chat` and `skyeye web`."""

import pytest

from skyeye.data.synth import render_scene
from skyeye.serve.session import ImageChat


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


def held_pixel_bytes(chat: ImageChat) -> int:
    """Bytes of decoded pixels reachable from the conversation object (the model it talks to aside)."""
    import gc
    import types

    import torch
    from PIL import Image

    seen, total = set(), 0
    pending = [value for name, value in vars(chat).items() if name != "model"]
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, (type, types.ModuleType, torch.nn.Module)):
            continue
        seen.add(id(item))
        if isinstance(item, Image.Image):
            total += item.width * item.height * len(item.getbands())
        pending.extend(gc.get_referents(item))
    return total


def test_a_session_holds_the_same_bounded_pixels_whatever_the_image_size(small_model, tmp_path):
    side, display = small_model.cfg.vision.image_size, 1024
    held = {}
    for width, height in [(3000, 2000), (1500, 1000)]:
        path = tmp_path / f"scene-{width}.png"
        render_scene(seed=1, size=64)[0].resize((width, height)).save(path)
        chats = [ImageChat(small_model, path, display_side=display) for _ in range(3)]
        held[width] = [held_pixel_bytes(chat) for chat in chats]
        assert all(chat.size == (width, height) for chat in chats)
    # The model's square and a display copy at most `display` wide: a 3000 x 2000 image decodes to 18 MB.
    bound = 3 * (side * side + display * round(display * 2000 / 3000))
    assert held[3000] == held[1500] and max(held[3000]) <= bound


def test_a_session_answers_and_places_boxes_as_the_full_image_would(tmp_path):
    from skyeye.images import load_image
    from skyeye.model.loading import default_source, load_model

    model = load_model(default_source())
    path = tmp_path / "wide.png"
    render_scene(seed=5, size=256)[0].resize((900, 500)).save(path)
    full = load_image(path)
    chat = ImageChat(model, path, max_new_tokens=24)
    assert (model.cfg.vision.to_pixels([chat.image.image]) == model.cfg.vision.to_pixels([full.image])).all()
    for question, task in [("the building", "grounding"), ("Briefly describe this image.", "caption")]:
        "".join(chat.stream(question, task))
        expected = model.ask(full, question, task=task, max_new_tokens=24)
        assert chat.turns[-1].assistant == expected.text
        assert chat.turns[-1].boxes == expected.boxes
        chat.reset()
    assert any(model.ask(full, "the building", task="grounding", max_new_tokens=24).boxes), "no box to compare"


def test_closing_a_stream_stops_its_generation_and_records_nothing(small_model):
    import threading

    chat = ImageChat(small_model, render_scene(seed=1, size=64)[0], max_new_tokens=150)
    stream = chat.stream("Briefly describe this image.", "caption")
    next(piece for piece in stream if piece)
    stream.close()
    assert not [thread for thread in threading.enumerate() if thread.name == "skyeye-generate"]
    assert chat.turns == [] and chat.conversation.turns == []
    answer = "".join(chat.stream("Briefly describe this image.", "caption"))
    assert [turn.assistant for turn in chat.turns] == [answer.strip()]
