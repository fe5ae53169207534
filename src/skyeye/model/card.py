"""A model card: what a trained model is, how it scored and where it fails, in the words of whoever trained it.

It is `card.yaml` in the checkpoint folder, beside skyeye.yaml and model.safetensors; `skyeye info` prints it
and the web app shows its summary and limitations under the title, so that a user meets a model's weak spots
where they use it. Every field but `summary` may be left out; unknown fields are errors:

    summary: One line: what the model is and what it was trained on.
    scores:         # measured figures, one row each; `data` says which split and how many items
      - {skill: captioning, data: UCM-Captions val (210 images), metric: CIDEr, value: 277.81}
    limitations:    # one line each: where answers are unreliable
      - "Grounding does not work: ..."
    good_for:       # one line each: what it does well
      - One-sentence captions of 0.3 m aerial photos.

A folder without `card.yaml` (and any source that is not a folder: a preset, a released .pth) has no card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from skyeye.settings import ConfigError, build, read_yaml_mapping

CARD_FILE = "card.yaml"
MAX_CARD_BYTES = 64 * 1024  # a card is a few lines of text; anything far larger is not one


@dataclass
class Score:
    # Defaults only so that a missing one is reported with its row (read_card), not as a TypeError.
    skill: str | None = None
    data: str | None = None
    metric: str | None = None
    value: float | None = None


@dataclass
class ModelCard:
    summary: str
    scores: list[Score] = field(default_factory=list)
    limitations: list[str] = field(default_factory=list)
    good_for: list[str] = field(default_factory=list)

    def text_lines(self) -> list[str]:
        """The card for a terminal: the summary, the scores as a table, then the limitations and strengths."""
        lines = [f"model card: {self.summary}"]
        if self.scores:
            rows = [("skill", "data", "metric", "value")]
            rows += [(s.skill, s.data, s.metric, f"{s.value:g}") for s in self.scores]
            skill_w, data_w, metric_w, value_w = (max(len(row[i]) for row in rows) for i in range(4))
            for skill, data, metric, value in rows:
                lines.append(f"  {skill:<{skill_w}}  {data:<{data_w}}  {metric:<{metric_w}}  {value:>{value_w}}")
        for title, items in (("known limitations", self.limitations), ("good for", self.good_for)):
            if items:
                lines += [f"  {title}:", *(f"  - {item}" for item in items)]
        return lines


def read_card(source: str | Path) -> ModelCard | None:
    """The card of checkpoint folder `source`; None where it has none. A bad card is a ConfigError naming the
    file and the field."""
    path = Path(source) / CARD_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_CARD_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a model card is at most {MAX_CARD_BYTES:,}")
    data = read_yaml_mapping(path, "model card")
    for name in ("scores", "limitations", "good_for"):
        if name in data and data[name] is None:  # `scores:` with nothing under it is no scores
            del data[name]
    data["summary"] = _one_line(data.get("summary"), path, "summary")
    card = build(ModelCard, data, str(path))
    for name in ("limitations", "good_for"):
        items = getattr(card, name)
        if not isinstance(items, list):
            raise ConfigError(f"{path}: {name} must be a list of one-line strings, got {items!r}")
        setattr(card, name, [_one_line(item, path, f"{name}[{i}]") for i, item in enumerate(items)])
    for i, score in enumerate(card.scores):
        for name in ("skill", "data", "metric"):
            setattr(score, name, _one_line(getattr(score, name), path, f"scores[{i}].{name}"))
        if score.value is None:
            raise ConfigError(f"{path}: scores[{i}].value must be the measured number")
    return card


def _one_line(text, path: Path, name: str) -> str:
    """`text` with its line breaks and runs of spaces made single spaces (YAML's folded strings end in one)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{path}: {name} must be non-empty text, got {text!r}")
    return " ".join(text.split())
