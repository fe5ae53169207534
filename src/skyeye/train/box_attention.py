"""An auxiliary loss that makes the decoder look at the object whose box it is writing.

Trained on boxes alone, the bundled model's attention at a box's first number was no better than uniform over
the 36 cells: nothing in next-token prediction rewards finding the object before guessing its place, and a
fixed central guess is the cheapest loss. Here, at each of the four positions that predict an answer box's
numbers, chosen heads of chosen layers are asked to put their attention on the visual tokens of the cells the
box covers: the loss is −log of that attention mass, averaged over positions, heads and layers.

The box is read back from the answer's own coordinate tokens, so flips, turns and crops of the image are
already applied to it; boxes in the question (region identification) are not answers and are not used.
Attention weights come from transformers' eager attention (the others do not return them); only the chosen layers
run it (return_weights_in): a bundled-model step of 32 detection-length rows took 1.14x the time of sdpa with eager
attention in every layer, 1.07x with it in two (bench/box_attention_step.py --boxes 30).
"""

from __future__ import annotations

import torch

from skyeye.boxes import GRID
from skyeye.model.number_line import coordinate_token_ids, token_cells

SMALLEST_MASS = 1e-6  # keeps −log finite where a head puts no attention at all on the box
ATTENTION = "skyeye_box_attention"  # the name under which transformers knows the attention below


def _eager_where_weights_are_read(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    if getattr(module, "returns_box_attention", False):
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("output_attentions", None)  # not wanted from this layer; sdpa would warn that it cannot give them
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def return_weights_in(llm, layers) -> None:
    """Makes the given layers of a LLaMA decoder return their attention weights (eager attention) while the others
    keep sdpa; with output_attentions=True its output's `attentions` then holds those layers' weights, in order."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.models.llama.modeling_llama import LlamaAttention

    AttentionInterface.register(ATTENTION, _eager_where_weights_are_read)
    AttentionMaskInterface.register(ATTENTION, eager_mask)  # an additive mask, which sdpa takes as well
    chosen = set(layers)
    for module in llm.modules():
        if isinstance(module, LlamaAttention):
            module.returns_box_attention = module.layer_idx in chosen
    llm.set_attn_implementation(ATTENTION)


class BoxAttentionTargets:
    """Which positions predict a box's numbers, and which visual tokens that box covers."""

    def __init__(self, model_cfg, tokenizer):
        ids = coordinate_token_ids(model_cfg, tokenizer, "box_attention")
        self.value_of = torch.full((max(len(tokenizer), model_cfg.llm.vocab_size),), -1, dtype=torch.long)
        self.value_of[torch.tensor(ids)] = torch.arange(GRID + 1)
        self.cells = torch.tensor(token_cells(model_cfg))
        self.tokens_per_image = len(self.cells)
        self.rows_left_out = 0  # rows that answer with a box but hold other than one image: counted, reported

    def __call__(self, labels: torch.Tensor, image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query mask [B, T], key targets [B, T, T]): the positions that predict a box number and, for each, the
        positions of the visual tokens its box covers. Rows with other than one image are left out (and counted in
        rows_left_out when they answer with a box): the grid describes one image's cells."""
        batch, length = labels.shape
        queries = torch.zeros(batch, length, dtype=torch.bool)
        keys = torch.zeros(batch, length, length, dtype=torch.bool)
        values = self.value_of[labels.clamp(min=0)].masked_fill(labels < 0, -1)
        for row in range(batch):
            visual = image_mask[row].nonzero().flatten()
            starts = self._box_starts(values[row])
            if starts and len(visual) != self.tokens_per_image:
                self.rows_left_out += 1
                continue
            for start in starts:
                box = values[row, start : start + 4].float()
                covered = visual[self._covered(box)]
                for offset in range(4):  # position p predicts the token at p + 1
                    queries[row, start - 1 + offset] = True
                    keys[row, start - 1 + offset, covered] = True
        return queries, keys

    @staticmethod
    def _box_starts(values: torch.Tensor) -> list[int]:
        """Positions of each answer box's first number: four answered coordinates in a row after a non-coordinate
        (the braces around them are tokenised with their neighbours: "▁{", "}<delim>{")."""
        is_number = values >= 0
        if len(is_number) < 5:
            return []
        four_from = is_number.unfold(0, 4, 1).all(dim=1)  # [s]: positions s..s+3 are all numbers
        return ((four_from[1:] & ~is_number[:-4]).nonzero().flatten() + 1).tolist()

    def _covered(self, box: torch.Tensor) -> torch.Tensor:
        x1, y1, x2, y2 = box.tolist()
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)  # a box thinner than a grid unit still covers its cell
        cells = self.cells
        return (cells[:, 0] < x2) & (cells[:, 2] > x1) & (cells[:, 1] < y2) & (cells[:, 3] > y1)


def box_attention_loss(
    attentions: tuple[torch.Tensor, ...], queries: torch.Tensor, keys: torch.Tensor, heads
) -> torch.Tensor | None:
    """Mean −log attention mass on the box's cells over the given heads of each layer in `attentions` (the weights
    of the layers return_weights_in chose); None when the batch writes no box."""
    if not queries.any():
        return None
    keys = keys.to(attentions[0].device)
    queries = queries.to(attentions[0].device)
    losses = []
    for layer_weights in attentions:
        weights = layer_weights[:, list(heads)].float()  # [B, heads, T, T]
        mass = (weights * keys[:, None]).sum(-1)  # [B, heads, T]
        losses.append(-mass.clamp(min=SMALLEST_MASS).log().masked_select(queries[:, None]))
    return torch.cat(losses).mean()
