"""How far an accuracy measured on few items can be from the model's true rate: the Wilson score interval.

Val sets here are small (57 grounding objects, 210 UCM images): 7 of 57 right is 12.3%, and the true rate behind
it may lie anywhere from 6% to 23%. Two runs whose intervals overlap widely are not told apart by the suite.
"""

from __future__ import annotations

import math

Z_95 = 1.959964  # the standard normal's 97.5th percentile: a two-sided 95% interval


def wilson_interval(rate: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% Wilson score interval (Wilson, 1927) of a proportion `rate` measured on `n` items, as fractions.
    Unlike rate ± z·sd it stays inside 0..1 and holds for rates near 0 or 1 and for small n."""
    if n <= 0 or not 0 <= rate <= 1:
        raise ValueError(f"need a rate in 0..1 measured on n > 0 items, got rate={rate!r}, n={n!r}")
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
