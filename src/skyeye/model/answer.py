"""Inference: questions about images → answers, the boxes they contain (in pixels) and timings.

Generation is transformers' `generate` on input embeddings (KV cache on): greedy by default; sampling
(`do_sample=True, temperature, top_p`) and beam search (`num_beams`) pass straight through. Batches are
left-padded so every prompt ends at the last column, and answers stop at the end token. The next
batch's images are read and resized in a worker thread while the current one generates (`iter_answers`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from skyeye.boxes import FoundBox, find_boxes
from skyeye.images import LoadedImage, load_image
from skyeye.model.inputs import collate, encode
from skyeye.prompts import Conversation, render_text

DEFAULT_MAX_NEW_TOKENS = 64


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
    pixels: torch.Tensor
    batch: dict[str, torch.Tensor]
    seconds: float


def _prepare(model, images, texts, tasks, histories) -> _Prepared:
    tokenizer, vision = model.tokenizer, model.cfg.vision
    started = time.perf_counter()
    frames = [_as_frames(image) for image in images]
    conversations = []
    for frame_list, text, task, history in zip(frames, texts, tasks, histories, strict=True):
        conversation = history.copy() if history is not None else Conversation(num_images=len(frame_list))
        conversations.append(conversation.ask(text, task))
    pixels = vision.to_pixels([f.image for fl in frames for f in fl]).to(model.device)
    segments = [c.segments(model.cfg.prompt_style) for c in conversations]
    encoded = [
        encode(s, tokenizer, model.cfg.visual_tokens_per_image, max_length=model.cfg.max_context_len) for s in segments
    ]
    batch = {k: v.to(model.device) for k, v in collate(encoded, tokenizer.pad_token_id, "left").items()}
    return _Prepared(frames, conversations, segments, pixels, batch, time.perf_counter() - started)


@torch.inference_mode()
def _generate(model, prepared: _Prepared, **generation) -> list[Answer]:
    tokenizer, batch = model.tokenizer, prepared.batch
    started = time.perf_counter()
    embeds = model.embed(batch["input_ids"], batch["image_mask"], prepared.pixels)
    encoded_images = time.perf_counter()
    output = model.llama_model.generate(
        inputs_embeds=embeds,
        attention_mask=batch["attention_mask"],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{"do_sample": False, "num_beams": 1, **generation},
    )
    finished = time.perf_counter()
    answers = []
    for row, conversation in enumerate(prepared.conversations):
        text = tokenizer.decode(output[row], skip_special_tokens=True).strip()
        new_tokens = _generated_length(output[row], tokenizer.eos_token_id)
        width, height = prepared.frames[row][0].image.size
        conversation.answer(text)
        answers.append(
            Answer(
                text=text,
                boxes=find_boxes(text, width, height),
                prompt=render_text(prepared.segments[row]),
                conversation=conversation,
                timings={
                    "prepare_s": prepared.seconds,
                    "vision_s": encoded_images - started,
                    "generate_s": finished - encoded_images,
                    "new_tokens": new_tokens,
                    "batch_size": len(prepared.conversations),
                },
            )
        )
    return answers


def _generated_length(tokens: torch.Tensor, eos_id: int) -> int:
    """Tokens up to and including the first end token; the rest of the row is batch padding."""
    ends = (tokens == eos_id).nonzero()
    return int(ends[0]) + 1 if len(ends) else len(tokens)
