"""Which bands of a scene are shown to the model as red, green, blue.

`--bands` names three bands (red, green, blue) or one (grayscale), each by its 1-based number or its name
(band description, or a band folder's file band name), any case: `4,3,2` or `B04,B03,B02`. Without it the
choice is `skyeye.geotiff.choose_rgb_bands`'s, as for a single image in `skyeye ask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from skyeye.geo.scene import SceneBand
from skyeye.geotiff import choose_rgb_bands


@dataclass(frozen=True)
class BandChoice:
    numbers: tuple[int, ...]  # 1-based, red green blue (or one, grayscale)
    labels: tuple[str, ...]  # each band's name, or its number when it has none
    why: str

    def describe(self) -> str:
        """e.g. `bands B04, B03, B02 (red, green, blue by Sentinel-2 band name B04, B03, B02)`."""
        subject = "bands" if len(self.numbers) > 1 else "band"
        return f"{subject} {', '.join(self.labels)} ({self.why})"


def choose_bands(bands: Sequence[SceneBand], spec: str | None, source: str) -> BandChoice:
    """The bands `spec` names (see the module doc), or the automatic choice when `spec` is None or empty."""
    if not spec or not spec.strip():
        numbers, why = choose_rgb_bands([b.colour for b in bands], [b.name for b in bands])
    else:
        numbers = [_band_number(item.strip(), bands, source) for item in spec.split(",")]
        if len(numbers) not in (1, 3):
            raise ValueError(f"--bands {spec!r}: give 3 bands (red, green, blue) or 1 (grayscale), not {len(numbers)}")
        why = "red, green, blue as given" if len(numbers) == 3 else "grayscale as given"
    return BandChoice(tuple(numbers), tuple(_label(bands[n - 1]) for n in numbers), why)


def _band_number(item: str, bands: Sequence[SceneBand], source: str) -> int:
    if item.isdigit():
        number = int(item)
        if not 1 <= number <= len(bands):
            raise ValueError(f"--bands: {source} has bands 1 to {len(bands)}, not {number}")
        return number
    matches = [b.number for b in bands if b.name and b.name.strip().casefold() == item.casefold()]
    if not matches:
        names = ", ".join(_label(b) for b in bands)
        raise ValueError(f"--bands: {source} has no band named {item!r}; its bands: {names}")
    return matches[0]


def _label(band: SceneBand) -> str:
    return band.name or str(band.number)
