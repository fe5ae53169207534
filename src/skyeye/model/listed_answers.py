"""Answers kept to the names a question lists ("Classify the image within one of the given classes: ...").

`ListedAnswers` is a transformers logits processor: for each row whose question lists classes
(`skyeye.class_lists.listed_classes`) it allows, step by step, only the tokens that continue one of the listed
names as an answer is tokenised (the name alone, then the end token), so greedy decoding gives the listed name the
model ranks highest token by token, and beam search the best of its beams. Other rows are left alone. The names
are tokenised as training tokenises an answer, so a name the model would say anyway comes out unchanged.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from skyeye.class_lists import listed_classes

Trie = dict[int, "Trie"]


def _trie(names: list[str], tokenizer) -> Trie:
    root: Trie = {}
    for name in names:
        node = root
        for token in [*tokenizer(name, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]:
            node = node.setdefault(token, {})
    return root


class ListedAnswers(LogitsProcessor):
    """Masks, in each constrained row, every token that no listed name continues with."""

    def __init__(self, tries: list[Trie | None]):
        self.tries = tries
        self.start: int | None = None  # where the answers begin in the ids generate hands over

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        rows_per_question = input_ids.shape[0] // len(self.tries)  # beams or several answers per question
        for row, ids in enumerate(input_ids[:, self.start :].tolist()):
            node = self.tries[row // rows_per_question]
            for token in ids:
                node = None if node is None else node.get(token)
            if node:  # None: unconstrained, or a finished answer generate only pads
                allowed = torch.tensor(list(node), device=scores.device)
                kept = scores[row, allowed]
                scores[row] = float("-inf")
                scores[row, allowed] = kept
        return scores


def listed_answers(questions: list[str], tokenizer) -> ListedAnswers | None:
    """A processor for a batch whose rows ask `questions`, or None when none of them lists classes."""
    lists = [listed_classes(question) for question in questions]
    if not any(lists):
        return None
    return ListedAnswers([_trie(names, tokenizer) if names else None for names in lists])
