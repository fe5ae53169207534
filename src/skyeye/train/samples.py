"""Records → model inputs: the conversation rendered and tokenised by the model's own prompt code, the
images loaded (optionally augmented) or their cached tower features looked up, and batches collated."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from skyeye.boxes import parse_boxes
from skyeye.data.record import Record
from skyeye.images import load_image
from skyeye.model.inputs import Encoded, TooLongError, collate, encode
from skyeye.prompts import TRAINING_STYLE, Conversation
from skyeye.train.config import AugmentConfig


@dataclass
class Sample:
    encoded: Encoded
    images: list[str]  # absolute image paths (the visual cache's keys)
    pixels: torch.Tensor | None  # [n_images, 3, S, S], None when features come from the cache


def conversation_of(record: Record) -> Conversation:
    conversation = Conversation(num_images=len(record.images))
    for turn in record.turns:
        conversation.ask(turn["user"]).answer(turn["assistant"])
    return conversation


# Words whose meaning a flip or rotation would change; records that use them keep their geometry.
DIRECTION_WORDS = re.compile(r"\b(left|right|top|bottom|upper|lower|north|south|east|west)", re.IGNORECASE)
ROTATIONS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def geometry_bound(record: Record) -> bool:
    """True when the record's text pins the image's geometry: boxes, or words such as "left" or "top"."""
    text = " ".join(value for turn in record.turns for value in turn.values())
    return bool(parse_boxes(text)) or bool(DIRECTION_WORDS.search(text))


def augment(image: Image.Image, settings: AugmentConfig, rng: random.Random) -> Image.Image:
    if settings.crop_scale < 1:
        scale = rng.uniform(settings.crop_scale, 1.0)
        width, height = int(image.width * scale), int(image.height * scale)
        left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
        image = image.crop((left, top, left + width, top + height))
    if settings.flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if settings.rotate:
        rotation = rng.choice(ROTATIONS)
        image = image if rotation is None else image.transpose(rotation)
    return image


class SampleMaker:
    """Turns one record into a Sample; too-long records are counted in `skipped`, never silently dropped.

    Augmentation draws from a generator seeded by (seed, epoch, index), so a resumed run sees exactly the
    crops and flips an uninterrupted run would have seen. Records whose text pins the geometry (boxes, "on
    the left") are never cropped, flipped or rotated: their answers would no longer match the image.
    """

    def __init__(self, model_cfg, tokenizer, augment_settings: AugmentConfig, max_length: int, seed: int,
                 load_pixels: bool = True):  # fmt: skip
        self.cfg, self.tokenizer, self.augment = model_cfg, tokenizer, augment_settings
        self.max_length, self.seed, self.load_pixels = max_length, seed, load_pixels
        self.skipped: Counter = Counter()

    def __call__(self, record: Record, root: Path, epoch: int, index: int) -> Sample | None:
        try:
            encoded = encode(
                conversation_of(record).segments(TRAINING_STYLE), self.tokenizer,
                self.cfg.visual_tokens_per_image, max_answer_tokens=self.cfg.max_txt_len, max_length=self.max_length,
            )  # fmt: skip
        except TooLongError:
            self.skipped["prompt longer than max_length"] += 1
            return None
        paths = [str(root / image) for image in record.images]
        pixels = None
        if self.load_pixels:
            rng = random.Random(f"{self.seed}:{epoch}:{index}")
            settings = self.augment if self.augment.active and not geometry_bound(record) else None
            images = [load_image(path).image for path in paths]
            images = [augment(image, settings, rng) for image in images] if settings else images
            pixels = self.cfg.vision.to_pixels(images)
        return Sample(encoded, paths, pixels)


def collate_samples(samples: list[Sample], pad_id: int, cache=None) -> dict[str, torch.Tensor]:
    """A right-padded batch with `pixels`, or with `features` from the visual cache when one is given."""
    batch = collate([s.encoded for s in samples], pad_id, padding_side="right")
    if cache is not None:
        batch["features"] = cache.lookup([path for s in samples for path in s.images])
    elif any(s.pixels is not None for s in samples):
        batch["pixels"] = torch.cat([s.pixels for s in samples])
    return batch
