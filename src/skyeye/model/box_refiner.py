"""A box refiner: the decoder says which object, a small dense detector says exactly where it ends.

The bundled model's decoder finds the object it is asked about roughly (its box centres land near it) but rarely
writes a tight box: a tower trained to localise gave, from its best cell, a tight box (IoU >= 0.5) for 2 in 3 of
NWPU VHR-10's val objects, while the same tower behind the decoder gave the decoder's boxes 1 in 11. So a model may
carry a refiner: its own conv tower (the vision tower's shape) with a linear head that predicts, per cell of the
grid, how likely an object of each known class is centred there and the box of that object (trained by
skyeye/train/box_refiner.py). When the question names one of its classes ("where is the bridge?"), a lone box in
the answer goes to the box of the cell surest of that class anywhere in the image: on NWPU VHR-10's val objects the
decoder's own box centres were too far off for their neighbourhood to find the object as often (51% tight against
72%). Otherwise each box the decoder writes goes to the box of the cell, among the 3 x 3 around the written box's
centre, surest of an object (of the named class, when there is one); a cell gives its box to one box of an answer (a
detection answer's boxes must not merge), and a box stays as written where the refiner is not sure of anything.
The answer stays text with boxes in it, as SkyEyeGPT's; only their numbers change.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from skyeye.boxes import GRID, map_boxes, parse_boxes
from skyeye.model.config import VisionConfig
from skyeye.model.conv_tower import ConvTower

SIZE_UNIT = 0.2  # a predicted log size of 0 is a box a fifth of the image wide: the head starts near typical objects
MIN_OBJECTNESS = 0.2  # below this the refiner is not sure of any object where it looks: the box stays
NEIGHBOURHOOD = 1  # cells on each side of the written box's centre cell that may take it


class BoxRefiner(nn.Module):
    """Normalised pixels [B, 3, S, S] (as VisionConfig.to_pixels gives) → per cell: class logits [B, N, C] and a box
    [B, N, 4] (x1, y1, x2, y2 as fractions of the image)."""

    def __init__(self, vision: VisionConfig, classes: list[str]):
        super().__init__()
        if vision.kind != "conv":
            raise ValueError(f"a box refiner needs a conv vision config, not {vision.kind!r}")
        self.classes = list(classes)
        self.tower = ConvTower(vision)
        self.head = nn.Linear(vision.width, len(classes) + 4)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.tower(pixels))
        side = round(out.shape[1] ** 0.5)  # the grid of the input given, which training may make larger
        cells = torch.arange(side * side, device=out.device)
        centres = torch.stack([(cells % side + 0.5) / side, (cells // side + 0.5) / side], dim=1)
        logits, shape = out[..., : len(self.classes)], out[..., len(self.classes) :]
        centre = centres + shape[..., :2] / side
        size = torch.exp(shape[..., 2:].float().clamp(-6, 3)).to(shape.dtype) * SIZE_UNIT
        return logits, torch.cat([centre - size / 2, centre + size / 2], dim=-1)

    def named_class(self, question: str) -> int | None:
        """The one class of the refiner that `question` names (in singular or plural), else None."""
        words = " ".join(re.findall(r"[a-z]+", question.lower()))
        named = {number for number, name in enumerate(self.classes)
                 if any(re.search(rf"\b{re.escape(form)}\b", words) for form in _number_forms(name))}  # fmt: skip
        return named.pop() if len(named) == 1 else None

    @torch.inference_mode()
    def refine(self, text: str, pixels: torch.Tensor, question: str = "") -> str:
        """`text` with each of its boxes (0..100 grid of the image in `pixels` [1, 3, S, S]) moved onto a detected
        object's box. When `question` names one of the refiner's classes, the object is of that class, and a lone box
        goes to the cell most sure of it anywhere in the image; otherwise each box goes to the cell near it most sure
        of an object of any class."""
        logits, boxes = self(pixels.to(self.head.weight.dtype))
        probabilities = logits[0].float().sigmoid()
        named = self.named_class(question)
        scores = probabilities.amax(dim=-1) if named is None else probabilities[:, named]
        side = round(scores.numel() ** 0.5)
        boxes = boxes[0].float().clamp(0, 1) * GRID
        anywhere = named is not None and len(parse_boxes(text)) == 1
        taken: set[int] = set()  # a cell gives its box once: boxes of several objects near one must not merge

        def moved(box):
            column = min(int((box[0] + box[2]) / 2 / GRID * side), side - 1)
            row = min(int((box[1] + box[3]) / 2 / GRID * side), side - 1)
            cells = range(side * side) if anywhere else [
                r * side + c
                for r in range(max(0, row - NEIGHBOURHOOD), min(side, row + NEIGHBOURHOOD + 1))
                for c in range(max(0, column - NEIGHBOURHOOD), min(side, column + NEIGHBOURHOOD + 1))
            ]  # fmt: skip
            best = max(cells, key=lambda cell: float(scores[cell]))
            x1, y1, x2, y2 = (round(float(v)) for v in boxes[best])
            if scores[best] < MIN_OBJECTNESS or best in taken or x1 >= GRID or y1 >= GRID:
                return box
            taken.add(best)
            return (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))

        return map_boxes(text, moved)


def _number_forms(name: str) -> tuple[str, str]:
    """A class name in singular and plural, whichever it is given in ("harbors": harbor, harbors)."""
    return (name[:-1], name) if name.endswith("s") else (name, name + "s")
