"""A fixed number line shared by the image's cells and the box coordinates, so the decoder can write where it looks.

A box's numbers are the coordinate tokens <0>..<100> (see skyeye.boxes) and each visual token is one cell of
the tower's grid, but nothing in their learned embeddings says that <40> and the cell whose centre lies at 40%
of the width are one place. Trained only on boxes, the bundled model's attention found the named object's cells
(with train/box_attention.py) and its output layer still wrote a fixed central guess. `number_line` in the
model config adds one sine-cosine code of a position to both sides:

- to each visual token, the code of its cell's centre: x in the first block of dimensions, y in the second;
- to each coordinate token <k>, the code of k in both blocks, in its input embedding and in its row of the
  output layer, so that a hidden state carrying an attended cell's code raises the logits of the coordinates
  near that cell's centre.

The codes are computed from the config, never stored: a checkpoint trained without them loads unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from skyeye.boxes import GRID, coordinate_token

FREQUENCIES = 32  # per axis: sine and cosine of each, 2 x 64 of the hidden dimensions
SHORTEST_WAVELENGTH = 4.0  # grid units (of 100): neighbouring coordinates stay distinguishable
LONGEST_WAVELENGTH = 4.0 * GRID  # longer than the image: the code of 0 and of 100 differ


def position_code(positions: torch.Tensor) -> torch.Tensor:
    """Grid positions [N] (0..100, fractional allowed) → codes [N, 2 * FREQUENCIES] of length 1."""
    ratios = torch.arange(FREQUENCIES, dtype=torch.float64, device="cpu") / max(FREQUENCIES - 1, 1)
    wavelengths = SHORTEST_WAVELENGTH * (LONGEST_WAVELENGTH / SHORTEST_WAVELENGTH) ** ratios
    angles = positions.to("cpu", torch.float64)[:, None] * (2 * math.pi / wavelengths)
    return torch.cat([angles.sin(), angles.cos()], dim=1) / math.sqrt(FREQUENCIES)


def token_cells(cfg) -> list[tuple[float, float, float, float]]:
    """Each visual token's cell on the 0..100 grid, (x1, y1, x2, y2), in the order the tokens enter the LLM:
    patches row-major, `merge_tokens` horizontal neighbours per token (see SkyEye.project_visual)."""
    side = cfg.vision.image_size // cfg.vision.patch_size
    merge = cfg.merge_tokens
    if side % merge:
        raise ValueError(f"{cfg.name}: merge_tokens {merge} does not divide the {side} patches of a row")
    step = GRID / side
    return [
        (column * merge * step, row * step, (column + 1) * merge * step, (row + 1) * step)
        for row in range(side)
        for column in range(side // merge)
    ]


def coordinate_token_ids(cfg, tokenizer, needed_by: str) -> list[int]:
    """The ids of <0>..<100>, in order; an error naming `needed_by` where the tokenizer lacks any as one token."""
    ids = tokenizer.convert_tokens_to_ids([coordinate_token(k) for k in range(GRID + 1)])
    if tokenizer.unk_token_id in ids or len(set(ids)) != GRID + 1:
        raise ValueError(f"{cfg.name}: {needed_by} needs the coordinates <0>..<{GRID}> as single tokens, and its "
                         "tokenizer lacks some")  # fmt: skip
    return ids


class NumberLine:
    """The codes of one model's visual tokens and coordinate tokens, added by hooks on its embeddings."""

    def __init__(self, cfg, tokenizer):
        hidden = cfg.llm.hidden_size
        if hidden < 4 * FREQUENCIES:
            raise ValueError(f"{cfg.name}: number_line needs llm.hidden_size >= {4 * FREQUENCIES}, not {hidden}")
        ids = coordinate_token_ids(cfg, tokenizer, "number_line")
        lengths = cfg.number_line
        width = 2 * FREQUENCIES
        # Built on the CPU explicitly: a checkpoint's model is constructed under torch.device("meta").
        cells = torch.tensor(token_cells(cfg), dtype=torch.float64, device="cpu")
        visual = torch.zeros(len(cells), hidden, dtype=torch.float64, device="cpu")
        visual[:, :width] = position_code((cells[:, 0] + cells[:, 2]) / 2)
        visual[:, width : 2 * width] = position_code((cells[:, 1] + cells[:, 3]) / 2)
        coordinates = position_code(torch.arange(GRID + 1, device="cpu"))
        tokens = torch.zeros(GRID + 1, hidden, dtype=torch.float64, device="cpu")
        tokens[:, :width] = coordinates
        tokens[:, width : 2 * width] = coordinates
        # Each block has length 1, so both together have length sqrt(2).
        self._visual = visual * (lengths.visual / math.sqrt(2))
        self._coordinates = tokens * (lengths.coordinates / math.sqrt(2))
        self._tokens = torch.zeros(cfg.llm.vocab_size, hidden, dtype=torch.float64, device="cpu")
        self._tokens[ids] = self._coordinates
        self._coordinate_ids = torch.tensor(ids, device="cpu")
        self._cache: dict[tuple, torch.Tensor] = {}

    def _cast(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The code `name` on `like`'s device, in its dtype (ids stay integers)."""
        tensor = getattr(self, name)
        dtype = like.dtype if tensor.is_floating_point() else tensor.dtype
        key = (name, like.device, dtype)
        if key not in self._cache:
            self._cache[key] = tensor.to(device=like.device, dtype=dtype)
        return self._cache[key]

    def add_to_visual(self, visual: torch.Tensor) -> torch.Tensor:
        """Visual tokens [N, tokens, hidden] plus their cells' codes."""
        return visual + self._cast("_visual", visual)

    def install(self, llm) -> None:
        """Hooks on the LLM's input embedding and output layer; the weights themselves stay as loaded."""
        llm.get_input_embeddings().register_forward_hook(self._embedding_hook)
        llm.get_output_embeddings().register_forward_hook(self._output_hook)

    def _embedding_hook(self, module, inputs: tuple, embeds: torch.Tensor) -> torch.Tensor:
        return embeds + F.embedding(inputs[0], self._cast("_tokens", embeds))

    def _output_hook(self, module, inputs: tuple, logits: torch.Tensor) -> torch.Tensor:
        hidden = inputs[0]
        bonus = F.linear(hidden, self._cast("_coordinates", hidden)).to(logits.dtype)
        return logits.index_add(-1, self._cast("_coordinate_ids", logits), bonus)
