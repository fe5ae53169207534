"""One conversation about one image, shared by `skyeye chat` and `skyeye web`.

The history is the model's own `Conversation`, so every turn is rendered by the same prompt code as
`skyeye ask` and training. `stream` yields the answer as it is generated: generation runs in a worker
thread that feeds a transformers `TextIteratorStreamer`, and the finished answer (its boxes in pixels)
is recorded as a turn once the stream ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skyeye.boxes import FoundBox
from skyeye.images import DEFAULT_MAX_PIXELS, LoadedImage, load_image
from skyeye.prompts import Conversation


@dataclass
class ChatTurn:
    user: str
    assistant: str
    boxes: list[FoundBox]
    timings: dict[str, float] = field(default_factory=dict)


class ImageChat:
    """An image, the conversation about it so far, and the boxes each answer named."""

    def __init__(self, model, image, max_new_tokens: int = 128, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.model, self.max_new_tokens, self.max_pixels = model, max_new_tokens, max_pixels
        self.open_image(image)

    def open_image(self, source) -> None:
        """Loads `source` (a path or PIL image) and starts a new conversation; raises `ImageError`."""
        self.image: LoadedImage = load_image(source, max_pixels=self.max_pixels)
        self.image_path = Path(source) if isinstance(source, (str, Path)) else None
        self.reset()

    def reset(self) -> None:
        self.conversation = Conversation(num_images=1)
        self.turns: list[ChatTurn] = []

    def stream(self, question: str, task: str | None = None) -> Iterator[str]:
        """Yields the answer piece by piece; afterwards `turns[-1]` holds it with its boxes and timings."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome: dict = {}

        def generate() -> None:
            try:
                outcome["answer"] = self.model.ask(self.image, question, task=task, history=self.conversation,
                                                   max_new_tokens=self.max_new_tokens, streamer=streamer)  # fmt: skip
            except Exception as err:  # re-raised in the caller's thread once the stream is closed
                outcome["error"] = err
                streamer.end()

        started = time.perf_counter()
        first_piece_s = None
        worker = threading.Thread(target=generate, name="skyeye-generate", daemon=True)
        worker.start()
        for piece in streamer:
            if first_piece_s is None and piece:
                first_piece_s = time.perf_counter() - started
            yield piece
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        answer = outcome["answer"]
        self.conversation = answer.conversation
        timings = {"first_token_s": first_piece_s or 0.0, "total_s": time.perf_counter() - started}
        self.turns.append(ChatTurn(self.conversation.turns[-1].user, answer.text, answer.boxes, timings))

    def to_record(self) -> dict:
        """The conversation, its boxes and the image, as written by `/save`."""
        return {
            "image": None if self.image_path is None else str(self.image_path),
            "image_size": list(self.image.original_size),
            "rendering": self.image.rendering,
            "turns": [
                {"user": turn.user, "assistant": turn.assistant, "boxes": [asdict(box) for box in turn.boxes]}
                for turn in self.turns
            ],
        }
