"""Inference: determinism, batching, stopping, options, and the boxes found in answers."""

import numpy as np
import pytest
import torch
from PIL import Image

from skyeye.boxes import find_boxes
from skyeye.prompts import Conversation


def _images():
    noise = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    return [
        Image.new("RGB", (64, 48), (200, 30, 30)),
        Image.fromarray(noise),
        Image.linear_gradient("L").convert("RGB"),
    ]


def test_greedy_generation_is_deterministic_and_batching_does_not_change_it(small_model):
    questions = ["what is this?", "how many buildings are there in the image?", "describe it"]
    single = [
        small_model.ask(img, q, task="vqa", max_new_tokens=12) for img, q in zip(_images(), questions, strict=True)
    ]
    again = [
        small_model.ask(img, q, task="vqa", max_new_tokens=12) for img, q in zip(_images(), questions, strict=True)
    ]
    batched = small_model.ask_many(_images(), questions, tasks=["vqa"] * 3, batch_size=3, max_new_tokens=12)
    assert [a.text for a in single] == [a.text for a in again]
    assert [a.text for a in single] == [a.text for a in batched]
    assert all(a.timings["new_tokens"] <= 12 for a in single)
    assert single[0].prompt.startswith("<s>[INST] <Img><ImageHere></Img> [vqa] what is this? [/INST]")


def test_generation_stops_at_the_end_token(small_model):
    lm_head = small_model.llama_model.lm_head
    biased = torch.nn.Linear(lm_head.in_features, lm_head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(lm_head.weight)
        biased.bias.zero_()
        biased.bias[small_model.tokenizer.eos_token_id] = 1e4
    small_model.llama_model.lm_head = biased
    answer = small_model.ask(_images()[0], "anything", max_new_tokens=20)
    assert answer.text == ""
    assert answer.timings["new_tokens"] == 1


def test_sampling_is_seeded_and_beam_search_runs(small_model):
    img = _images()[1]
    torch.manual_seed(5)
    first = small_model.ask(img, "q", do_sample=True, temperature=1.5, top_p=1.0, max_new_tokens=8).text
    torch.manual_seed(5)
    second = small_model.ask(img, "q", do_sample=True, temperature=1.5, top_p=1.0, max_new_tokens=8).text
    assert first == second
    beams = small_model.ask(img, "q", num_beams=3, max_new_tokens=6)
    assert isinstance(beams.text, str) and beams.timings["new_tokens"] <= 6


def test_history_continues_the_conversation(small_model):
    img = _images()[0]
    first = small_model.ask(img, "what is it?", task="vqa", max_new_tokens=4)
    second = small_model.ask(img, "and where?", history=first.conversation, max_new_tokens=4)
    assert len(second.conversation.turns) == 2
    assert second.prompt.count("<ImageHere>") == 1
    assert f"[/INST] {first.text}</s><s>[INST] and where? [/INST]" in second.prompt
    assert len(first.conversation.turns) == 1, "the caller's history is not modified"


def test_several_frames_fill_several_image_slots(small_model):
    frames = _images()[:2]
    answer = small_model.ask(frames, "describe the video frame image", task="caption", max_new_tokens=3)
    assert answer.prompt.count("<Img><ImageHere></Img>") == 2


def test_boxes_in_answers_are_returned_in_pixels_of_the_input_image():
    found = find_boxes("<p>plane</p> {<10><20><50><100>}<delim>{<0><0><1><1>} and {<0><0><100><50>}", 640, 480)
    assert [b.phrase for b in found] == ["plane", "plane", None]
    assert found[0].grid == (10, 20, 50, 100)
    assert found[0].pixels == pytest.approx((64.0, 96.0, 320.0, 480.0))
    assert found[2].pixels == pytest.approx((0.0, 0.0, 640.0, 240.0))


def test_mismatched_inputs_are_clear_errors(small_model):
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        small_model.ask_many(_images()[:2], ["q"])
    with pytest.raises(ValueError, match="no images"):
        conv = Conversation().ask("q")
        from skyeye.model.inputs import collate, encode

        batch = collate([encode(conv.segments("skyeye"), small_model.tokenizer, 4)], 0)
        small_model(**batch)


def test_the_output_layer_gets_its_input_with_plain_strides_whatever_generate_slices(small_model):
    # A 3-D input whose strides skip positions (generate's last position of each row) makes PyTorch's matmul
    # copy the whole transposed output weight per row: seconds per answer for 7B in bfloat16 on a CPU.
    seen = []

    def record(module, args):
        hidden = args[0]
        plain = hidden.clone(memory_format=torch.contiguous_format).stride()
        seen.append((tuple(hidden.shape), hidden.stride() == plain))

    hook = small_model.llama_model.get_output_embeddings().register_forward_pre_hook(record)
    try:
        small_model.ask_many(_images()[:2], ["what is this?", "describe it"], tasks=["vqa"] * 2, batch_size=2,
                             max_new_tokens=3, min_new_tokens=3)  # fmt: skip
    finally:
        hook.remove()
    assert len(seen) == 3 and all(plain for _, plain in seen), seen
