"""A conversation's cache (skyeye.model.answer.ConversationCache): follow-ups compute only their new tokens and
answer exactly as recomputing the whole conversation from scratch does."""

import pytest
import torch

from skyeye.data.synth import render_scene
from skyeye.images import load_image
from skyeye.model import answer as answer_module
from skyeye.model.answer import ConversationCache, RecentCaches, continue_conversation
from skyeye.model.inputs import encode
from skyeye.prompts import Conversation
from skyeye.serve.session import ImageChat

TURNS = [("Briefly describe this image.", "caption"), ("the building", "grounding"), ("what is in the image?", "vqa")]


@pytest.fixture(scope="module")
def bundled():
    from skyeye.model.loading import default_source, load_model

    return load_model(default_source())


@pytest.fixture(scope="module")
def scene():
    return load_image(render_scene(seed=5, size=256)[0])


@pytest.fixture
def generated(monkeypatch):
    """The token ids of every answer generated, cached or not, in order."""
    outputs = []
    real = answer_module._llm_generate

    def recording(*args, **kwargs):
        output = real(*args, **kwargs)
        outputs.append(output[0].tolist())
        return output

    monkeypatch.setattr(answer_module, "_llm_generate", recording)
    return outputs


def conversation_ids(model, conversation: Conversation, answered: bool = True) -> list[int]:
    """The token ids of the whole conversation rendered from scratch (without its last answer: its prompt)."""
    conversation = conversation.copy()
    if not answered:
        conversation.turns[-1].assistant = None
    segments = conversation.segments(model.cfg.prompt_style)
    return encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image).input_ids


def recomputed(model, image, turns, **generation) -> list:
    """Every turn asked with the whole conversation recomputed from scratch (`model.ask`)."""
    history, answers = None, []
    for question, task in turns:
        answers.append(model.ask(image, question, task=task, history=history, **generation))
        history = answers[-1].conversation
    return answers


def cached(cache, model, turns, history=None, **generation) -> list:
    answers = []
    for question, task in turns:
        answers.append(continue_conversation(model, cache, question, task, history, **generation))
        history = answers[-1].conversation
    return answers


@pytest.mark.parametrize("source, style", [("bundled", None), ("bundled", "minigptv2"), ("tiny", None)])
def test_three_greedy_turns_give_the_tokens_of_recomputing_while_reusing_every_earlier_token(
    bundled, scene, generated, source, style
):
    from skyeye.model.loading import default_source, load_model

    if source == "bundled" and style is None:
        model = bundled
    else:
        model = load_model(default_source() if source == "bundled" else source, prompt_style=style)
    expected = recomputed(model, scene, TURNS, max_new_tokens=24)
    expected_ids, generated[:] = list(generated), []
    answers = cached(ConversationCache(scene), model, TURNS, max_new_tokens=24)
    assert generated == expected_ids
    assert [a.text for a in answers] == [a.text for a in expected]
    assert [a.prompt for a in answers] == [a.prompt for a in expected]
    assert any(a.text for a in answers), "nothing was generated to compare"
    for before, after, tokens in zip(answers, answers[1:], expected_ids, strict=False):
        # Everything fed before: the earlier prompt and the answer as generated (its last token is never fed).
        fed = conversation_ids(model, before.conversation, answered=False) + tokens[:-1]
        full = conversation_ids(model, after.conversation)
        # Segments are tokenised one by one, so the earlier prompt is a prefix of every later rendering.
        assert full[: before.timings["prompt_tokens"]] == fed[: before.timings["prompt_tokens"]]
        shared = next(i for i, (a, b) in enumerate(zip(full, [*fed, None], strict=False)) if a != b)
        assert after.timings["reused_tokens"] == shared >= before.timings["prompt_tokens"]
        if source == "bundled":  # a trained model's answers tokenise back as generated: all of it is reused
            assert shared == len(fed)
    assert answers[0].timings["reused_tokens"] == 0


def test_sampling_with_a_seed_gives_the_answers_of_recomputing(bundled, scene, generated):
    sampling = {"do_sample": True, "temperature": 1.5, "top_p": 0.95, "max_new_tokens": 16}
    torch.manual_seed(7)
    expected = recomputed(bundled, scene, TURNS, **sampling)
    expected_ids, generated[:] = list(generated), []
    torch.manual_seed(7)
    answers = cached(ConversationCache(scene), bundled, TURNS, **sampling)
    assert generated == expected_ids and [a.text for a in answers] == [a.text for a in expected]
    assert answers[-1].timings["reused_tokens"] > 0


def test_beam_search_recomputes_its_prompt_and_the_next_turn_reuses_only_what_still_holds(bundled, scene):
    cache = ConversationCache(scene)
    greedy = cached(cache, bundled, TURNS[:1], max_new_tokens=12)
    kept = cache.cached_tokens
    beams = continue_conversation(bundled, cache, *TURNS[1], greedy[-1].conversation, max_new_tokens=12, num_beams=3)
    assert beams.timings["reused_tokens"] == 0 and cache.cached_tokens == kept
    expected = recomputed(bundled, scene, TURNS[:1], max_new_tokens=12)
    expected.append(bundled.ask(scene, *TURNS[1], history=expected[0].conversation, max_new_tokens=12, num_beams=3))
    assert [a.text for a in [*greedy, beams]] == [a.text for a in expected]
    after = continue_conversation(bundled, cache, *TURNS[2], beams.conversation, max_new_tokens=12)
    assert greedy[0].timings["prompt_tokens"] <= after.timings["reused_tokens"] <= kept
    assert after.text == bundled.ask(scene, *TURNS[2], history=expected[1].conversation, max_new_tokens=12).text


def test_an_edited_history_reuses_only_the_tokens_before_the_edit(bundled, scene):
    cache = ConversationCache(scene)
    answers = cached(cache, bundled, TURNS[:2], max_new_tokens=24)
    edited = answers[-1].conversation.copy()
    original = edited.turns[0].assistant
    edited.turns[0].assistant = "an edited answer about something else entirely"
    answer = continue_conversation(bundled, cache, *TURNS[2], edited, max_new_tokens=24)
    assert answer.text == bundled.ask(scene, *TURNS[2], history=edited, max_new_tokens=24).text
    # The edit may begin with the tokens the model's own answer began with ("an ..."): those still hold.
    texts = (original, edited.turns[0].assistant)
    pieces = [bundled.tokenizer(text, add_special_tokens=False).input_ids for text in texts]
    shared = next((i for i, (a, b) in enumerate(zip(*pieces, strict=False)) if a != b), min(map(len, pieces)))
    first_prompt = answers[0].timings["prompt_tokens"]
    assert bundled.cfg.visual_tokens_per_image < answer.timings["reused_tokens"] <= first_prompt + shared


def test_the_chat_runs_the_tower_once_and_a_reset_conversation_answers_as_a_new_one(bundled, scene):
    tower_passes = []
    hook = bundled.visual_encoder.register_forward_hook(lambda *args: tower_passes.append(1))
    try:
        chat = ImageChat(bundled, scene.image, max_new_tokens=24)
        for question, task in TURNS:
            "".join(chat.stream(question, task))
        assert len(tower_passes) == 1 and chat.cache.cached_tokens > 0
        expected = recomputed(bundled, scene, TURNS, max_new_tokens=24)
        assert [turn.assistant for turn in chat.turns] == [a.text for a in expected]
        chat.reset()
        "".join(chat.stream(*TURNS[1]))
        assert chat.turns[-1].assistant == bundled.ask(scene, *TURNS[1], max_new_tokens=24).text
        # A stopped answer is not part of the conversation: asking again answers as if it never was.
        stream = chat.stream(*TURNS[2])
        next(piece for piece in stream if piece)
        stream.close()
        "".join(chat.stream(*TURNS[2]))
        history = bundled.ask(scene, *TURNS[1], max_new_tokens=24).conversation
        assert chat.turns[-1].assistant == bundled.ask(scene, *TURNS[2], history=history, max_new_tokens=24).text
    finally:
        hook.remove()


def test_recent_caches_bound_the_memory_of_many_conversations(bundled, scene):
    first = ConversationCache(scene)
    cached(first, bundled, TURNS[:1], max_new_tokens=8)
    one = first.nbytes
    recent = RecentCaches(max_bytes=int(one * 1.5))
    caches = [ConversationCache(scene, recent) for _ in range(3)]
    for cache in caches:
        cached(cache, bundled, TURNS[:1], max_new_tokens=8)
    assert [cache.nbytes > 0 for cache in caches] == [False, False, True]
    # A forgotten conversation answers its follow-up as before, from scratch.
    history = recomputed(bundled, scene, TURNS[:1], max_new_tokens=8)[0].conversation
    answer = continue_conversation(bundled, caches[0], *TURNS[1], history, max_new_tokens=8)
    assert answer.timings["reused_tokens"] == 0
    assert answer.text == bundled.ask(scene, *TURNS[1], history=history, max_new_tokens=8).text
    assert [cache.nbytes > 0 for cache in caches] == [True, False, False]
