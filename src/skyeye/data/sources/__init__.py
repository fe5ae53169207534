"""Native-dataset adapters; importing this package registers every adapter in ADAPTERS.

| adapter         | datasets (module)                                                        |
|-----------------|--------------------------------------------------------------------------|
| karpathy        | UCM-Captions, Sydney-Captions, RSICD `dataset*.json` (captions)          |
| precomp         | RSICD, RSITMD `*_precomp` text layout (captions)                         |
| nwpu_captions   | NWPU-Captions (captions)                                                 |
| capera          | CapERA UAV video captions (capera)                                       |
| rsvqa           | RSVQA-LR, RSVQA-HR (vqa)                                                 |
| rsivqa          | RSIVQA text files (vqa)                                                  |
| floodnet_vqa    | FloodNet VQA (vqa)                                                       |
| dior_rsvg, rsvg | DIOR-RSVG, RSVG visual grounding (grounding)                             |
| dior, dota, nwpu_vhr10, hrrsd | object annotations for phrase grounding, REG, conversations (regions) |
| class_folders   | UC Merced, AID, NWPU-RESISC45, EuroSAT, WHU-RS19, PatternNet (scenes)   |
| ucm_scene       | UC Merced classes on UCM-Captions' images and splits (ucm_scenes)       |
| synthetic       | rendered scenes with exact boxes (synthetic)                             |
"""

from skyeye.data.sources import capera, captions, grounding, regions, scenes, synthetic, ucm_scenes, vqa  # noqa: F401
from skyeye.data.sources.base import ADAPTERS

__all__ = ["ADAPTERS"]
