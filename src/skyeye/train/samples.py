"""Records → model inputs: the conversation rendered and tokenised by the model's own prompt code, the
images loaded (optionally augmented) or their cached tower features looked up, and batches collated."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from skyeye.boxes import GRID, map_boxes, parse_boxes
from skyeye.data.record import Record
from skyeye.data.sources.class_names import aliases_of
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
G = GRID
# Where a grid box (x1, y1, x2, y2) goes when the image is transposed (PIL's ROTATE_90 turns counter-clockwise).
BOX_AFTER = {
    Image.Transpose.FLIP_LEFT_RIGHT: lambda b: (G - b[2], b[1], G - b[0], b[3]),
    Image.Transpose.ROTATE_90: lambda b: (b[1], G - b[2], b[3], G - b[0]),
    Image.Transpose.ROTATE_180: lambda b: (G - b[2], G - b[3], G - b[0], G - b[1]),
    Image.Transpose.ROTATE_270: lambda b: (G - b[3], b[0], G - b[1], b[2]),
}


def has_direction_words(record: Record) -> bool:
    return bool(DIRECTION_WORDS.search(" ".join(value for turn in record.turns for value in turn.values())))


def has_boxes(record: Record) -> bool:
    return any(parse_boxes(value) for turn in record.turns for value in turn.values())


def augment(image: Image.Image, settings: AugmentConfig, rng: random.Random,
            boxes: bool = False) -> tuple[Image.Image, list[Image.Transpose]]:  # fmt: skip
    """A random crop, flip and quarter turn of `image`, and the transposes applied, in order. With `boxes` the
    image is never cropped (a crop could cut a box), only flipped and turned, and the boxes follow."""
    if settings.crop_scale < 1 and not boxes:
        scale = rng.uniform(settings.crop_scale, 1.0)
        width, height = int(image.width * scale), int(image.height * scale)
        left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
        image = image.crop((left, top, left + width, top + height))
    transposes = []
    if settings.flip and rng.random() < 0.5:
        transposes.append(Image.Transpose.FLIP_LEFT_RIGHT)
    if settings.rotate:
        rotation = rng.choice(ROTATIONS)
        transposes += [] if rotation is None else [rotation]
    for transpose in transposes:
        image = image.transpose(transpose)
    return image, transposes


def moved_boxes(record: Record, transposes: list[Image.Transpose]) -> Record:
    """`record` with every box in its text moved as the image was flipped and turned."""

    def move(box):
        for transpose in transposes:
            box = BOX_AFTER[transpose](box)
        return box

    turns = [{role: map_boxes(text, move) for role, text in turn.items()} for turn in record.turns]
    return replace(record, turns=turns)


def renamed_class(record: Record, rng: random.Random) -> Record:
    """A scene record asked and answered under another name of its class, when it lists its class once and
    that name has an alias the list does not already use; otherwise the record unchanged."""
    label = record.meta.get("label")
    if record.task != "scene" or not label or len(record.turns) != 1 or record.turns[0]["assistant"] != label:
        return record
    question = record.turns[0]["user"]
    as_item = re.compile(rf"(?<![\w-]){re.escape(label)}(?![\w-])")
    aliases = [name for name in aliases_of(label) if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", question)]
    if len(as_item.findall(question)) != 1 or not aliases:
        return record
    alias = rng.choice(aliases)
    return replace(record, turns=[{"user": as_item.sub(alias, question), "assistant": alias}])


class SampleMaker:
    """Turns one record into a Sample; too-long records are counted in `skipped`, never silently dropped.

    Augmentation draws from a generator seeded by (seed, epoch, index), so a resumed run sees exactly the
    crops and flips an uninterrupted run would have seen. Records with boxes are flipped and turned with
    their boxes moved to match, never cropped; records whose words pin the geometry ("on the left") are
    left as they are: their answers would no longer match the image. With `rename_classes` a scene question is
    sometimes asked under another name of its class (`renamed_class`).
    """

    def __init__(self, model_cfg, tokenizer, augment_settings: AugmentConfig, max_length: int, seed: int,
                 load_pixels: bool = True):  # fmt: skip
        self.cfg, self.tokenizer, self.augment = model_cfg, tokenizer, augment_settings
        self.max_length, self.seed, self.load_pixels = max_length, seed, load_pixels
        self.skipped: Counter = Counter()

    def __call__(self, record: Record, root: Path, epoch: int, index: int) -> Sample | None:
        paths = [str(root / image) for image in record.images]
        images = None
        if self.load_pixels:
            rng = random.Random(f"{self.seed}:{epoch}:{index}")
            images = [load_image(path).image for path in paths]
            boxes = has_boxes(record)
            # Boxes can follow one image's flips and turns; several images would each need their own.
            if self.augment.active and not has_direction_words(record) and not (boxes and len(images) > 1):
                augmented = [augment(image, self.augment, rng, boxes) for image in images]
                images = [image for image, _ in augmented]
                if boxes:
                    record = moved_boxes(record, augmented[0][1])
        if self.augment.rename_classes and record.task == "scene":
            rng = random.Random(f"{self.seed}:{epoch}:{index}:name")
            if rng.random() < self.augment.rename_classes:
                record = renamed_class(record, rng)
        try:
            encoded = encode(
                conversation_of(record).segments(TRAINING_STYLE), self.tokenizer,
                self.cfg.visual_tokens_per_image, max_answer_tokens=self.cfg.max_txt_len, max_length=self.max_length,
            )  # fmt: skip
        except TooLongError:
            self.skipped["prompt longer than max_length"] += 1
            return None
        pixels = self.cfg.vision.to_pixels(images) if images is not None else None
        return Sample(encoded, paths, pixels)


def collate_samples(samples: list[Sample], pad_id: int, cache=None) -> dict[str, torch.Tensor]:
    """A right-padded batch with `pixels`, or with `features` from the visual cache when one is given."""
    batch = collate([s.encoded for s in samples], pad_id, padding_side="right")
    if cache is not None:
        batch["features"] = cache.lookup([path for s in samples for path in s.images])
    elif any(s.pixels is not None for s in samples):
        batch["pixels"] = torch.cat([s.pixels for s in samples])
    return batch
