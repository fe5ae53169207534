"""`ask_many` reads and resizes the next batch's images while the current batch generates."""

import threading

import numpy as np
import pytest
from PIL import Image

from skyeye.images import ImageError
from skyeye.model import answer as answer_module


def _image_files(tmp_path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_the_next_batch_is_read_while_the_current_one_generates(small_model, tmp_path, monkeypatch):
    paths = _image_files(tmp_path, 4)
    second_batch_read = threading.Event()
    seen_while_generating = []
    read_frames, generate = answer_module._as_frames, answer_module._generate

    def reading(image):
        if image == paths[2]:
            second_batch_read.set()
        return read_frames(image)

    def generating(model, prepared, **generation):
        if not seen_while_generating:  # the first batch: generation waits to see the second batch being read
            seen_while_generating.append(second_batch_read.wait(timeout=10))
        return generate(model, prepared, **generation)

    monkeypatch.setattr(answer_module, "_as_frames", reading)
    monkeypatch.setattr(answer_module, "_generate", generating)
    answers = small_model.ask_many(paths, ["[caption] Describe."] * 4, batch_size=2, max_new_tokens=3)
    assert seen_while_generating == [True]
    serial = [small_model.ask(path, "[caption] Describe.", max_new_tokens=3).text for path in paths]
    assert [a.text for a in answers] == serial and [a.timings["batch_size"] for a in answers] == [2] * 4


def test_an_unreadable_image_fails_when_its_batch_comes_after_the_earlier_batches_are_answered(small_model, tmp_path):
    paths = _image_files(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    batches = answer_module.iter_answers(small_model, paths + [str(tmp_path / "broken.png")], ["what?"] * 4,
                                         batch_size=2, max_new_tokens=2)  # fmt: skip
    assert len(next(batches)) == 2
    with pytest.raises(ImageError, match="broken.png"):
        next(batches)


def test_boxes_are_in_the_full_images_pixels_when_the_image_comes_already_resized(small_model, monkeypatch):
    """The chat session and the API hand `ask_many` the image resized to the model's square (with its full size
    as `original_size`); a stand-in decoder answers with a fixed box, which must land in the full image's pixels."""
    import dataclasses

    import torch

    from skyeye.images import load_image, resize_for_model

    box_text = "{<10><20><30><40>}"
    ids = small_model.tokenizer(box_text, add_special_tokens=False)["input_ids"]

    def stand_in_decoder(model, embeds, attention_mask, questions, **generation):
        return torch.tensor([ids] * embeds.shape[0])

    monkeypatch.setattr(answer_module, "_llm_generate", stand_in_decoder)
    full = load_image(Image.new("RGB", (400, 200), "gray"))
    resized = dataclasses.replace(full, image=resize_for_model(full.image, small_model.cfg.vision.image_size))
    as_given, as_resized = answer_module.ask_many(small_model, [full, resized], ["[refer] the road"] * 2)
    assert as_given.text == as_resized.text == box_text
    assert as_given.boxes[0].pixels == as_resized.boxes[0].pixels == pytest.approx((40, 40, 120, 80))
