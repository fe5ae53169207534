"""Inference: questions about images → answers, the boxes they contain (in pixels) and timings.

Generation is transformers' `generate` on input embeddings (KV cache on): greedy by default; sampling
(`do_sample=True, temperature, top_p`) and beam search (`num_beams`) pass straight through. Batches are
left-padded so every prompt ends at the last column, and answers stop at the end token. A question that lists
the classes to answer with gets one of them (`listed_only`, see `skyeye.model.listed_answers`). The next
batch's images are read and resized in a worker thread while the current one generates (`iter_answers`).

A conversation answered turn after turn (`continue_conversation`, as `ImageChat` does for `skyeye chat` and the
web app) keeps a `ConversationCache`: its image's tower features and the LLM's keys and values of every token
so far, so that a follow-up question costs about its new tokens only, with the answers of recomputing from
scratch.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from skyeye.boxes import FoundBox, find_boxes, parse_boxes
from skyeye.images import LoadedImage, load_image
from skyeye.model.inputs import collate, encode
from skyeye.prompts import Conversation, render_text

DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_LISTED_ONLY = True  # a question that lists classes is answered with one of them
DEFAULT_REFINE_BOXES = True  # a model with a box refiner moves the boxes it writes onto the objects it detects


@dataclass
class Answer:
    text: str
    boxes: list[FoundBox]
    prompt: str
    conversation: Conversation
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "answer": self.text,
            "boxes": [
                {"phrase": b.phrase, "grid": list(b.grid), "pixels": [round(v, 2) for v in b.pixels]}
                for b in self.boxes
            ],
            "prompt": self.prompt,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _as_frames(image) -> list[LoadedImage]:
    frames = image if isinstance(image, (list, tuple)) else [image]
    return [f if isinstance(f, LoadedImage) else load_image(f) for f in frames]


def ask_many(
    model,
    images: list,
    texts: list[str],
    tasks: list[str | None] | None = None,
    histories: list[Conversation | None] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    **generation,
) -> list[Answer]:
    batches = iter_answers(model, images, texts, tasks, histories, batch_size, max_new_tokens, **generation)
    return [answer for batch in batches for answer in batch]


def iter_answers(
    model,
    images: list,
    texts: list[str],
    tasks: list[str | None] | None = None,
    histories: list[Conversation | None] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    **generation,
) -> Iterator[list[Answer]]:
    """The answers batch by batch, in order. A worker thread reads, decodes and resizes the next batch's
    images and encodes its prompts while the current batch generates (decoding and resizing are a quarter
    of a batch's time otherwise spent serially); an unreadable image fails when its batch's turn comes."""
    if not len(images) == len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} questions")
    tasks = tasks or [None] * len(texts)
    histories = histories or [None] * len(texts)
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer: load it from a checkpoint folder or a LLaMA folder")
    spans = [slice(start, start + batch_size) for start in range(0, len(texts), batch_size)]

    def prepare(span: slice) -> _Prepared:
        return _prepare(model, images[span], texts[span], tasks[span], histories[span])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skyeye-images") as worker:
        upcoming = worker.submit(prepare, spans[0]) if spans else None
        for index in range(len(spans)):
            prepared = upcoming.result()
            if index + 1 < len(spans):
                upcoming = worker.submit(prepare, spans[index + 1])
            yield _generate(model, prepared, max_new_tokens=max_new_tokens, **generation)


@dataclass
class _Prepared:
    """One batch made ready for the model: everything but the forward passes."""

    frames: list[list[LoadedImage]]
    conversations: list[Conversation]
    segments: list
    pixels: torch.Tensor | None  # None when the images' features are already known (a conversation's cache)
    batch: dict[str, torch.Tensor]
    seconds: float


def _prepare(model, images, texts, tasks, histories, with_pixels: bool = True) -> _Prepared:
    tokenizer, vision = model.tokenizer, model.cfg.vision
    started = time.perf_counter()
    frames = [_as_frames(image) for image in images]
    conversations = []
    for frame_list, text, task, history in zip(frames, texts, tasks, histories, strict=True):
        conversation = history.copy() if history is not None else Conversation(num_images=len(frame_list))
        conversations.append(conversation.ask(text, task))
    pixels = vision.to_pixels([f.image for fl in frames for f in fl]).to(model.device) if with_pixels else None
    segments = [c.segments(model.cfg.prompt_style) for c in conversations]
    encoded = [
        encode(s, tokenizer, model.cfg.visual_tokens_per_image, max_length=model.cfg.max_context_len) for s in segments
    ]
    batch = {k: v.to(model.device) for k, v in collate(encoded, tokenizer.pad_token_id, "left").items()}
    return _Prepared(frames, conversations, segments, pixels, batch, time.perf_counter() - started)


@torch.inference_mode()
def _generate(model, prepared: _Prepared, refine_boxes: bool = DEFAULT_REFINE_BOXES, **generation) -> list[Answer]:
    batch = prepared.batch
    started = time.perf_counter()
    embeds = model.embed(batch["input_ids"], batch["image_mask"], prepared.pixels)
    encoded_images = time.perf_counter()
    output = _llm_generate(model, embeds, batch["attention_mask"], _questions(prepared), **generation)
    timings = {"vision_s": encoded_images - started, "generate_s": time.perf_counter() - encoded_images}
    return _answers(model, prepared, output, timings, refine_boxes)


def _llm_generate(model, embeds: torch.Tensor, attention_mask: torch.Tensor, questions: list[str],
                  listed_only: bool = DEFAULT_LISTED_ONLY, **generation) -> torch.Tensor:  # fmt: skip
    """The generated tokens of every row (`generate` on input embeddings returns no prompt tokens). With
    `listed_only` a row whose question lists classes answers with one of them (`skyeye.model.listed_answers`)."""
    from transformers import LogitsProcessorList

    from skyeye.model.listed_answers import listed_answers

    tokenizer = model.tokenizer
    processor = listed_answers(questions, tokenizer) if listed_only else None
    if processor is not None:
        generation["logits_processor"] = LogitsProcessorList([processor, *generation.get("logits_processor", [])])
    return model.llama_model.generate(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{"do_sample": False, "num_beams": 1, **generation},
    )


def _questions(prepared: _Prepared) -> list[str]:
    return [conversation.turns[-1].user for conversation in prepared.conversations]


def _answers(model, prepared: _Prepared, output: torch.Tensor, timings: dict[str, float],
             refine_boxes: bool) -> list[Answer]:  # fmt: skip
    """Each row's answer, recorded in its conversation, with its boxes in the pixels of its image (moved by the
    model's box refiner, when it has one and `refine_boxes`: see model/box_refiner.py)."""
    tokenizer = model.tokenizer
    answers = []
    first_frame = 0  # of this row's frames, in prepared.pixels
    for row, conversation in enumerate(prepared.conversations):
        text = tokenizer.decode(output[row], skip_special_tokens=True).strip()
        frames = prepared.frames[row]
        # A box names a place in one image; with several, which one it is in is not known.
        if refine_boxes and model.box_refiner is not None and len(frames) == 1 and parse_boxes(text):
            pixels = prepared.pixels[first_frame : first_frame + 1] if prepared.pixels is not None else None
            if pixels is None:  # a conversation's cache kept the image's features, not its pixels
                pixels = model.cfg.vision.to_pixels([frames[0].image]).to(model.device)
            text = model.box_refiner.refine(text, pixels, conversation.turns[-1].user)
        first_frame += len(frames)
        new_tokens = int(generated_mask(output[row], tokenizer.eos_token_id).sum())
        # The frame of the boxes is the full image, also when the caller passed it already resized for the model.
        width, height = prepared.frames[row][0].original_size
        conversation.answer(text)
        answers.append(
            Answer(
                text=text,
                boxes=find_boxes(text, width, height),
                prompt=render_text(prepared.segments[row]),
                conversation=conversation,
                timings={
                    "prepare_s": prepared.seconds,
                    **timings,
                    "new_tokens": new_tokens,
                    "batch_size": len(prepared.conversations),
                },
            )
        )
    return answers


def generated_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 for each generated token of a row [N, T] up to and including its first end token, 0 for the batch padding
    after it."""
    ends = (tokens == eos_id).long()
    return ((ends.cumsum(-1) - ends) == 0).long()


class ConversationCache:
    """What a conversation about one image keeps between its turns, so that a follow-up costs its new tokens only:
    the frozen tower's features of the image (computed on the first turn) and the LLM's keys and values (a
    transformers DynamicCache) of every token fed so far, with those tokens' ids.

    Each turn still encodes its whole conversation, exactly as recomputing from scratch would, and reuses the keys
    and values of the longest run of leading tokens it shares with the cache; only the rest is computed. Matching
    token ids rather than counting turns is what keeps a cut or edited history safe: a cleared conversation shares
    only its image part, a question asked again after a stopped answer shares everything before it, and an answer
    that tokenises differently from how it was generated is reused up to where the two differ. Equal ids mean equal
    inputs because a cache belongs to one image (`frames`): a new image needs a new cache.
    """

    def __init__(self, frames, recent: RecentCaches | None = None):
        self.frames: list[LoadedImage] = _as_frames(frames)
        self.recent = recent
        self.features: torch.Tensor | None = None
        # The ids of the tokens fed so far and their keys and values, replaced together: a reader in another
        # thread (a memory bound evicting it) never sees one without the other.
        self._kept: tuple[list[int], object] | None = None

    @property
    def cached_tokens(self) -> int:
        kept = self._kept
        return 0 if kept is None else len(kept[0])

    @property
    def nbytes(self) -> int:
        kept = self._kept
        layers = [] if kept is None else kept[1].layers
        tensors = [self.features] + [t for layer in layers for t in (layer.keys, layer.values)]
        return sum(t.nbytes for t in tensors if t is not None)

    def forget(self) -> None:
        """Drops the features and the keys and values; the next turn computes its prompt from scratch."""
        self.features, self._kept = None, None

    def _take(self, ids: list[int], image_end: int):
        """The kept keys and values cut to the longest prefix they share with `ids`, and its length; (None, 0) when
        nothing can be reused. The prefix covers at least every image token (the new tokens are embedded without
        the image) and leaves at least the last token, which `generate` must feed itself. Until `_keep` the cache
        holds nothing, so that a turn interrupted halfway leaves no half-updated state behind."""
        kept, self._kept = self._kept, None
        if kept is None:
            return None, 0
        fed, past = kept
        shared, most = 0, min(len(fed), len(ids) - 1)
        while shared < most and fed[shared] == ids[shared]:
            shared += 1
        if shared < max(image_end, 1):
            return None, 0
        past.crop(shared - past.get_seq_length())  # a negative count: the tokens to remove from the end
        return past, shared

    def _keep(self, fed: list[int], past) -> None:
        """Keeps the keys and values `generate` left in `past`: the prompt and every answer token but the last."""
        held = past.get_seq_length()
        if held <= len(fed):
            self._kept = (fed[:held], past)
            if self.recent is not None:
                self.recent.used(self)


class RecentCaches:
    """Bounds the memory of many conversations, one per web session: once their caches hold more than `max_bytes`
    together, the least recently answered ones forget theirs (their next turn is computed from scratch, as without
    a cache). The conversation just answered keeps its cache whatever its size."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._order: OrderedDict[int, weakref.ref] = OrderedDict()  # least recently answered first
        self._lock = threading.Lock()

    def used(self, cache: ConversationCache) -> None:
        with self._lock:
            self._order.pop(id(cache), None)
            self._order[id(cache)] = weakref.ref(cache)
            caches = {key: ref() for key, ref in self._order.items()}
            total = sum(c.nbytes for c in caches.values() if c is not None)
            for key, older in list(caches.items())[:-1]:
                if older is not None and total <= self.max_bytes:
                    break
                if older is not None:  # otherwise gone with its session
                    total -= older.nbytes
                    older.forget()
                del self._order[key]


@torch.inference_mode()
def continue_conversation(
    model,
    cache: ConversationCache,
    text: str,
    task: str | None = None,
    history: Conversation | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    refine_boxes: bool = DEFAULT_REFINE_BOXES,
    **generation,
) -> Answer:
    """`model.ask` about the cache's image after `history`, with the answer recomputing from scratch would give,
    computing only what `cache` does not hold (see ConversationCache). Timings add `prompt_tokens` and
    `reused_tokens`, the prompt tokens whose keys and values came from the cache."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer: load it from a checkpoint folder or a LLaMA folder")
    features = cache.features  # read once: a memory bound may make the cache forget it meanwhile
    prepared = _prepare(model, [cache.frames], [text], [task], [history], with_pixels=features is None)
    batch = prepared.batch
    ids, image_mask = batch["input_ids"][0].tolist(), batch["image_mask"][0]
    started = time.perf_counter()
    if features is None:
        features = cache.features = model.visual_features(prepared.pixels)
    # Beam search (and several answers per prompt) runs `generate` on copies of the row that it reorders as it
    # goes, so the keys and values it ends with are not those of the answer it returns: such a turn recomputes its
    # whole prompt (the image features are still reused) and leaves the cache as it was, whose tokens the next
    # turn reuses as far as they still match. Greedy and sampling feed exactly the answer's tokens, so their
    # keys and values continue the conversation.
    one_row = generation.get("num_beams", 1) == 1 and generation.get("num_return_sequences", 1) == 1
    image_end = int(image_mask.nonzero()[-1]) + 1 if image_mask.any() else 0
    past, reused = cache._take(ids, image_end) if one_row else (None, 0)
    if one_row and past is None:
        from transformers import DynamicCache

        past = DynamicCache(config=model.llama_model.config)
    # The cached prefix holds every image token, so the new tokens need no image; generate feeds only the
    # embeddings after the cached ones.
    slots = batch["image_mask"] if reused == 0 else torch.zeros_like(batch["image_mask"])
    embeds = model.embed(batch["input_ids"], slots, features=features)
    encoded_images = time.perf_counter()
    extra = {} if past is None else {_cache_argument(model.llama_model): past}
    output = _llm_generate(model, embeds, batch["attention_mask"], _questions(prepared), max_new_tokens=max_new_tokens,
                           **extra, **generation)  # fmt: skip
    timings = {"vision_s": encoded_images - started, "generate_s": time.perf_counter() - encoded_images,
               "prompt_tokens": len(ids), "reused_tokens": reused}  # fmt: skip
    if past is not None:
        cache._keep(ids + output[0].tolist(), past)
    return _answers(model, prepared, output, timings, refine_boxes)[0]


def _cache_argument(llm) -> str:
    """transformers 5 renamed `past_key_values` to `cache` (warning about the old name); older 5.x know only it."""
    import inspect

    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
