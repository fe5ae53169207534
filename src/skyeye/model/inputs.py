"""Rendered conversations → token ids, loss labels and image positions; and batching them.

Every text segment is tokenised on its own without special tokens, as MiniGPT-v2 does; BOS and EOS
segments become their token ids (the prompt style decides where BOS goes, see `skyeye.prompts`). Image
slots become `tokens_per_image` positions flagged in `image_mask`; their ids are the pad id and are never
looked up for meaning (the model overwrites their embeddings with visual tokens). Labels are IGNORE_INDEX
everywhere except assistant answers and their end token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skyeye.prompts import Segment

IGNORE_INDEX = -100


class TooLongError(ValueError):
    """A sample whose prompt (with its image tokens) does not fit the context."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    image_mask: list[bool]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(
    segments: list[Segment],
    tokenizer,
    tokens_per_image: int,
    max_answer_tokens: int | None = None,
    max_length: int | None = None,
) -> Encoded:
    """Token ids, labels and image mask of one rendered conversation.

    Answers longer than `max_answer_tokens` are cut (MiniGPT-v2's `max_txt_len`); a sample longer than
    `max_length` loses its tail, which is flagged in `truncated`. The prompt up to the first answer must fit.
    """
    ids: list[int] = []
    labels: list[int] = []
    image_mask: list[bool] = []
    truncated = False
    for segment in segments:
        if segment.kind == "image":
            piece = [tokenizer.pad_token_id] * tokens_per_image
        elif segment.kind == "bos":
            piece = [tokenizer.bos_token_id]
        elif segment.kind == "eos":
            piece = [tokenizer.eos_token_id]
        else:
            piece = tokenizer(segment.text, add_special_tokens=False)["input_ids"]
            if segment.learn and max_answer_tokens is not None and len(piece) > max_answer_tokens:
                piece, truncated = piece[:max_answer_tokens], True
        ids += piece
        labels += piece if segment.learn else [IGNORE_INDEX] * len(piece)
        image_mask += [segment.kind == "image"] * len(piece)
    if max_length is not None and len(ids) > max_length:
        first_learned = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(ids))
        if first_learned >= max_length:
            raise TooLongError(f"the prompt takes {first_learned} tokens, more than the context of {max_length}")
        ids, labels, image_mask, truncated = ids[:max_length], labels[:max_length], image_mask[:max_length], True
    return Encoded(ids, labels, image_mask, truncated)


def collate(samples: list[Encoded], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pads a batch: right for training, left for generation (so every prompt ends at the last column)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    width = max(len(s) for s in samples)
    batch = {
        "input_ids": torch.full((len(samples), width), pad_id, dtype=torch.long),
        "labels": torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long),
        "image_mask": torch.zeros((len(samples), width), dtype=torch.bool),
        "attention_mask": torch.zeros((len(samples), width), dtype=torch.long),
    }
    for row, sample in enumerate(samples):
        span = slice(width - len(sample), width) if padding_side == "left" else slice(0, len(sample))
        batch["input_ids"][row, span] = torch.tensor(sample.input_ids)
        batch["labels"][row, span] = torch.tensor(sample.labels)
        batch["image_mask"][row, span] = torch.tensor(sample.image_mask)
        batch["attention_mask"][row, span] = 1
    return batch
