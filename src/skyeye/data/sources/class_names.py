"""Readable class names: "denseresidential" → "dense residential", "ground-track-field" → "ground track field".

Native class names come as folder names and category ids written every possible way: glued lowercase
(UCM "storagetanks", DIOR "golffield"), CamelCase (AID "BareLand", EuroSAT "AnnualCrop"), snake case
(NWPU-RESISC45 "golf_course"), kebab case (DOTA "ground-track-field", DIOR "Expressway-Service-area").
`readable` splits on `-`, `_`, spaces and CamelCase, lower-cases, and segments glued lowercase words with
a small vocabulary of the words used by the common remote-sensing class lists (UCM-21, AID-30,
NWPU-RESISC45, EuroSAT, WHU-RS19, PatternNet, DIOR-20, DOTA-15/18, NWPU VHR-10, HRRSD-13). A glued word
that the vocabulary cannot cover completely is left intact, so an unknown name is never mangled.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Every word of the class lists above, as single words (compounds are split into these by `_segment`).
VOCABULARY = frozenset(
    """
    agricultural airplane airport annual area bare baseball basketball beach bridge building buildings cemetery center
    chaparral chimney christmas church circular closed cloud coastal commercial container course court crane crop
    crossroad crosswalk dam dense desert diamond expressway farm farmland ferry field football forest freeway
    gas golf ground harbor helicopter helipad herbaceous highway home ice industrial intersection island
    junction lake land large lot mansion marking meadow medium mobile mountain nursing oil overpass palace panel
    park parking pasture permanent plane plant playground pond pool port power railway rectangular residential
    resort river road roundabout runway school sea service ship shipping small snowberg soccer ball solar space sparse
    square stadium station storage swimming tank tanks tennis terminal terrace thermal toll track train
    transformer treatment tree vegetation vehicle viaduct wastewater well wetland windmill yard
    """.split()  # noqa: SIM905 (a word list reads better as text)
)

# Names that different class lists give one kind of scene (UCM "harbor" is AID's "port", UCM "agricultural" is
# AID's "farmland"). Training may ask a scene under another of its names (`augment.rename_classes`), so the model
# answers with the name in the list it is shown rather than the one it learned.
ALIASES = (
    ("harbor", "port"), ("parking lot", "parking"), ("agricultural", "farmland", "farm"), ("overpass", "viaduct"),
    ("airplane", "airport"), ("storage tanks", "storage tank"), ("bare land", "barren land"),
    ("baseball diamond", "baseball field"), ("freeway", "highway"), ("meadow", "grassland"), ("forest", "woodland"),
    ("industrial", "industrial area"), ("dense residential", "dense residential area"),
    ("medium residential", "medium residential area"), ("sparse residential", "sparse residential area"),
    ("railway station", "train station"), ("golf course", "golf field"), ("mobile home park", "trailer park"),
    ("sea", "ocean"), ("mountain", "hill"), ("square", "plaza"), ("pond", "lake"), ("intersection", "crossroad"),
    ("runway", "airstrip"), ("tennis court", "tennis courts"), ("river", "stream"), ("commercial", "commercial area"),
)  # fmt: skip


def aliases_of(name: str) -> tuple[str, ...]:
    """The other names of `name`'s kind of scene in ALIASES; () when it has none."""
    for group in ALIASES:
        if name in group:
            return tuple(other for other in group if other != name)
    return ()


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def readable(name: str) -> str:
    """A class name as words: lower case (single capital letters such as HRRSD's "T junction" kept)."""
    words = []
    for part in re.split(r"[-_\s]+", name.strip()):
        for token in _CAMEL.split(part):
            if not token:
                continue
            if len(token) == 1 and token.isupper():
                words.append(token)
            else:
                words.extend(_segment(token.lower()))
    return " ".join(words)


@lru_cache(maxsize=1024)
def _segment(word: str) -> tuple[str, ...]:
    """The fewest vocabulary words that spell `word` exactly, or `word` itself when none do."""
    if word in VOCABULARY or not word.isalpha():
        return (word,)
    # best[i]: fewest words spelling word[:i] (None: impossible); dynamic programming over prefixes.
    best: list[tuple[str, ...] | None] = [()] + [None] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(end):
            prefix = best[start]
            if prefix is not None and word[start:end] in VOCABULARY:
                candidate = (*prefix, word[start:end])
                current = best[end]
                if current is None or len(candidate) < len(current):
                    best[end] = candidate
    return best[-1] or (word,)
