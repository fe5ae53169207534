"""The conversation layer of the front ends: an image as a conversation keeps it, and one conversation about it.

`ConversationImage` (the image of `skyeye chat`, `skyeye web` and of each `skyeye serve` request) is the image
resized for the model with what places an answer's boxes: the full image's size and its georeferencing.
`ImageChat` (one conversation about one image, shared by `skyeye chat` and `skyeye web`) keeps its turns.

The history is the model's own `Conversation`, so every turn is rendered by the same prompt code as
`skyeye ask` and training. `stream` yields the answer as it is generated: generation runs in a worker
thread that feeds a transformers `TextIteratorStreamer`, and the finished answer (its boxes in pixels)
is recorded as a turn once the stream ends; a stream closed early (Ctrl-C in the terminal, a cleared
conversation in the web app) stops its generation and records nothing.

A conversation never keeps the decoded full-resolution image (a 9000 x 9000 scene is 243 MB): only the image
already resized to the vision tower's input square, which gives the model exactly the tensor the full image
would (`skyeye.images.resize_for_model`), the full image's size as numbers, for boxes in its pixels, and on
request a copy scaled to fit a display. What one conversation holds is therefore bounded, whatever the upload.
For a georeferenced raster it keeps its `Georeference` too (CRS and transform), which places every box on the
map and in longitude / latitude (also in the record `/save` writes).

Each turn continues the conversation's `ConversationCache` (skyeye.model.answer): the image goes through the
vision tower once per image and a follow-up question computes only its new tokens, with the answers of
recomputing from scratch. A reset conversation or a stopped answer needs nothing dropped: a turn reuses only
the tokens it shares with the cache. Given `recent` (a `RecentCaches`), the caches of many conversations share
one memory bound (the web app's sessions).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from skyeye.boxes import FoundBox, find_boxes
from skyeye.geo.georef import Georeference, georeference_of
from skyeye.images import DEFAULT_MAX_PIXELS, LoadedImage, load_image, resize_for_model
from skyeye.model.answer import ConversationCache, RecentCaches, continue_conversation
from skyeye.prompts import Conversation


@dataclass(frozen=True)
class ConversationImage:
    """An image as a conversation keeps it: `image` resized to the model's input square, with the full image's
    size, mode and rendering (`image.original_size` etc.), the frame of every box; and `georeference`, how those
    pixels sit on the map (None unless a raster with a CRS whose pixels are the image's: `georeference_of`)."""

    image: LoadedImage
    georeference: Georeference | None

    @classmethod
    def of(cls, loaded: LoadedImage, model_side: int) -> ConversationImage:
        """`loaded` (its file still in place, for the georeferencing) for a model that sees `model_side` pixels a
        side: exactly the tensor the full image would give it (`skyeye.images.resize_for_model`)."""
        return cls(replace(loaded, image=resize_for_model(loaded.image, model_side)), georeference_of(loaded))

    @property
    def size(self) -> tuple[int, int]:
        return self.image.original_size

    def find_boxes(self, text: str) -> list[FoundBox]:
        """The boxes `text` names, in pixels of the full image (the model saw the resized one)."""
        return find_boxes(text, *self.size)

    def box_record(self, box: FoundBox) -> dict:
        """A box for JSON: phrase, grid, pixels and, on a georeferenced image, its corners on the map and in lon/lat."""
        record = {"phrase": box.phrase, "grid": list(box.grid), "pixels": [round(v, 2) for v in box.pixels]}
        return record if self.georeference is None else record | self.georeference.box_coordinates(box.pixels)


@dataclass
class ChatTurn:
    user: str
    assistant: str
    boxes: list[FoundBox]
    timings: dict[str, float] = field(default_factory=dict)


class ImageChat:
    """An image, the conversation about it so far, and the boxes each answer named.

    `conversation_image` is the image (a `ConversationImage`): `image`, `size` and `georeference` are its own;
    `display` (only with `display_side`) is the image scaled to at most `display_side` pixels a side.
    """

    def __init__(self, model, image, max_new_tokens: int = 128, max_pixels: int = DEFAULT_MAX_PIXELS,
                 display_side: int | None = None, recent: RecentCaches | None = None):  # fmt: skip
        self.model, self.max_new_tokens, self.max_pixels = model, max_new_tokens, max_pixels
        self.display_side, self.recent = display_side, recent
        self.open_image(image)

    def open_image(self, source) -> None:
        """Loads `source` (a path or PIL image) and starts a new conversation; raises `ImageError`."""
        loaded = load_image(source, max_pixels=self.max_pixels)
        self.display: Image.Image | None = None if self.display_side is None else _fit(loaded.image, self.display_side)
        self.conversation_image = ConversationImage.of(loaded, self.model.cfg.vision.image_size)
        self.image_path = Path(source) if isinstance(source, (str, Path)) else None
        self.cache = ConversationCache(self.image, self.recent)
        self.reset()

    @property
    def image(self) -> LoadedImage:
        return self.conversation_image.image

    @property
    def size(self) -> tuple[int, int]:
        return self.conversation_image.size

    @property
    def georeference(self) -> Georeference | None:
        return self.conversation_image.georeference

    def reset(self) -> None:
        self.conversation = Conversation(num_images=1)
        self.turns: list[ChatTurn] = []

    def stream(self, question: str, task: str | None = None) -> Iterator[str]:
        """Yields the answer piece by piece; afterwards `turns[-1]` holds it with its boxes and timings."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        outcome: dict = {}

        def generate() -> None:
            try:
                outcome["answer"] = continue_conversation(
                    self.model, self.cache, question, task=task, history=self.conversation,
                    max_new_tokens=self.max_new_tokens, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)]),
                )  # fmt: skip
            except Exception as err:  # re-raised in the caller's thread once the stream is closed
                outcome["error"] = err
                streamer.end()

        started = time.perf_counter()
        first_piece_s = None
        worker = threading.Thread(target=generate, name="skyeye-generate", daemon=True)
        try:
            worker.start()
            for piece in streamer:
                if first_piece_s is None and piece:
                    first_piece_s = time.perf_counter() - started
                yield piece
        finally:
            # Closed early or interrupted: the model stops at its next token instead of answering to the end.
            stop.set()
            if worker.is_alive():
                worker.join()
        if "error" in outcome:
            raise outcome["error"]
        answer = outcome["answer"]
        self.conversation = answer.conversation
        boxes = answer.boxes
        timings = {"first_token_s": first_piece_s or 0.0, "total_s": time.perf_counter() - started}
        self.turns.append(ChatTurn(self.conversation.turns[-1].user, answer.text, boxes, timings))

    def to_record(self) -> dict:
        """The conversation, its boxes (on the map too, for a georeferenced raster) and the image, for `/save`."""
        record = {
            "image": None if self.image_path is None else str(self.image_path),
            "image_size": list(self.image.original_size),
            "rendering": self.image.rendering,
        }
        if self.georeference is not None:
            record["georeference"] = self.georeference.describe()
        record["turns"] = [
            {"user": turn.user, "assistant": turn.assistant,
             "boxes": [self.conversation_image.box_record(box) for box in turn.boxes]}
            for turn in self.turns
        ]  # fmt: skip
        return record


def _fit(image: Image.Image, side: int) -> Image.Image:
    """`image` scaled down (never up) so that its longer side is at most `side`."""
    scale = min(1.0, side / max(image.size))
    return image.resize((round(image.width * scale), round(image.height * scale))) if scale < 1.0 else image


class _StopWhenSet:
    """A transformers stopping criterion that ends generation once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
