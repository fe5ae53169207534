"""A box refiner: the decoder says which object, a small dense detector says exactly where it ends.

The bundled model's decoder finds the object it is asked about roughly (its box centres land near it) but rarely
writes a tight box: a tower trained to localise gave, from its best cell, a tight box (IoU >= 0.5) for 2 in 3 of
NWPU VHR-10's val objects, while the same tower behind the decoder gave the decoder's boxes 1 in 11. So a model may
carry a refiner: its own conv tower (the vision tower's shape) with a linear head that predicts, per cell of the
grid, how likely an object of each known class is centred there and the box of that object (trained by
skyeye/train/box_refiner.py). Each box the decoder writes is moved to the box of the cell, among the 3 x 3 around
the written box's centre, that most likely holds an object centre, when that is likely enough and no earlier box of
the answer took that cell (a detection answer's boxes must not merge into one); otherwise it stays.
The answer stays text with boxes in it, as SkyEyeGPT's; only their numbers change.
"""

from __future__ import annotations

import torch
from torch import nn

from skyeye.boxes import GRID, map_boxes
from skyeye.model.config import VisionConfig
from skyeye.model.conv_tower import ConvTower

SIZE_UNIT = 0.2  # a predicted log size of 0 is a box a fifth of the image wide: the head starts near typical objects
MIN_OBJECTNESS = 0.2  # below this no cell near the written box holds an object the refiner knows: the box stays
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
        self.side = vision.image_size // vision.patch_size

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.tower(pixels))
        side = round(out.shape[1] ** 0.5)  # the grid of the input given, which training may make larger
        cells = torch.arange(side * side, device=out.device)
        centres = torch.stack([(cells % side + 0.5) / side, (cells // side + 0.5) / side], dim=1)
        logits, shape = out[..., : len(self.classes)], out[..., len(self.classes) :]
        centre = centres + shape[..., :2] / side
        size = torch.exp(shape[..., 2:].float().clamp(-6, 3)).to(shape.dtype) * SIZE_UNIT
        return logits, torch.cat([centre - size / 2, centre + size / 2], dim=-1)

    @torch.inference_mode()
    def refine(self, text: str, pixels: torch.Tensor) -> str:
        """`text` with each of its boxes (0..100 grid of the image in `pixels` [1, 3, S, S]) moved to the nearby
        detected object's box."""
        logits, boxes = self(pixels.to(self.head.weight.dtype))
        objectness = logits[0].float().sigmoid().amax(dim=-1)
        side = round(objectness.numel() ** 0.5)
        boxes = boxes[0].float().clamp(0, 1) * GRID
        taken: set[int] = set()  # a cell gives its box once: boxes of several objects near one must not merge

        def moved(box):
            column = min(int((box[0] + box[2]) / 2 / GRID * side), side - 1)
            row = min(int((box[1] + box[3]) / 2 / GRID * side), side - 1)
            near = [r * side + c
                    for r in range(max(0, row - NEIGHBOURHOOD), min(side, row + NEIGHBOURHOOD + 1))
                    for c in range(max(0, column - NEIGHBOURHOOD), min(side, column + NEIGHBOURHOOD + 1))]  # fmt: skip
            best = max(near, key=lambda cell: float(objectness[cell]))
            x1, y1, x2, y2 = (round(float(v)) for v in boxes[best])
            if objectness[best] < MIN_OBJECTNESS or best in taken or x1 >= GRID or y1 >= GRID:
                return box
            taken.add(best)
            return (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))

        return map_boxes(text, moved)
