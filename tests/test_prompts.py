import pytest

from skyeye.prompts import TASKS, Conversation, PromptError, identifier_of, render_text, with_task


def test_task_names_map_to_identifiers_once():
    assert with_task("where is the plane?", "grounding") == "[refer] where is the plane?"
    assert with_task("this {<1><2><3><4>} is", "identify") == "[identify] this {<1><2><3><4>} is"
    assert with_task("hello", "chat") == "hello"
    assert with_task("[vqa] is it urban?", "caption") == "[vqa] is it urban?"
    assert identifier_of("  [detection] planes") == "[detection]"
    with pytest.raises(PromptError, match="unknown task 'nope'"):
        with_task("x", "nope")
    assert set(TASKS) >= {"caption", "vqa", "grounding", "refer", "identify", "detection", "chat"}


def test_first_turn_places_the_image_inside_the_instruction():
    segments = Conversation().ask("Briefly describe this image.", "caption").segments("skyeye")
    assert [s.kind for s in segments] == ["bos", "text", "image", "text"]
    assert segments[1].text == "[INST] <Img>"
    assert segments[3].text == "</Img> [caption] Briefly describe this image. [/INST]"
    assert not any(s.learn for s in segments)


def test_multi_turn_learns_only_answers_and_their_end_token():
    conv = Conversation().ask("q1", "vqa").answer("a1").ask("q2").answer("a2")
    segments = conv.segments("skyeye")
    learned = [(s.kind, s.text) for s in segments if s.learn]
    assert learned == [("text", "a1"), ("eos", "</s>"), ("text", "a2"), ("eos", "</s>")]
    assert segments[-3].text == "[INST] q2 [/INST]"
    assert sum(s.kind == "image" for s in segments) == 1


def test_every_turn_opens_with_its_own_bos_as_minigptv2_trains():
    conv = Conversation().ask("q1", "vqa").answer("a1").ask("q2").answer("a2").ask("q3")
    segments = conv.segments("skyeye")
    opening = [segments[i - 1].kind for i, s in enumerate(segments) if s.kind == "text" and s.text.startswith("[INST]")]
    assert opening == ["bos", "bos", "bos"]
    assert sum(s.kind == "bos" for s in segments) == 3
    assert render_text(segments) == (
        "<s>[INST] <Img><ImageHere></Img> [vqa] q1 [/INST] a1</s><s>[INST] q2 [/INST] a2</s><s>[INST] q3 [/INST]"
    )


def test_the_minigptv2_style_adds_one_bos_at_the_very_start_and_nothing_else():
    conv = Conversation().ask("q1", "vqa").answer("a1").ask("q2")
    skyeye, minigptv2 = conv.segments("skyeye"), conv.segments("minigptv2")
    assert [s.kind for s in minigptv2[:2]] == ["bos", "bos"]
    assert minigptv2[1:] == skyeye
    assert render_text(minigptv2).startswith("<s><s>[INST] <Img>")
    with pytest.raises(PromptError, match="prompt style 'llava'"):
        conv.segments("llava")


def test_several_images_get_one_slot_each_in_order():
    segments = Conversation(num_images=2).ask("what happens?", "caption").segments("skyeye")
    images = [s for s in segments if s.kind == "image"]
    assert [s.image_index for s in images] == [0, 1]
    assert render_text(segments).count("<Img><ImageHere></Img>") == 2


def test_conversation_order_is_enforced():
    with pytest.raises(PromptError, match="no open question"):
        Conversation().answer("x")
    with pytest.raises(PromptError, match="no answer yet"):
        Conversation().ask("a").ask("b")
    with pytest.raises(PromptError, match="empty"):
        Conversation().ask("   ")
    with pytest.raises(PromptError, match="no turns"):
        Conversation().segments("skyeye")
