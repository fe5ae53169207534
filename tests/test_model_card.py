"""The model card (`card.yaml` in a checkpoint folder): read strictly, printed by `skyeye info`, shown by the web
app."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skyeye.cli import main
from skyeye.model.card import CARD_FILE, MAX_CARD_BYTES, read_card
from skyeye.model.loading import bundled_model

CARD = """\
summary: >
  A test model,
  trained on nothing.
scores:
  - {skill: captioning, data: UCM-Captions val (210 images), metric: CIDEr, value: 123.45}
  - {skill: grounding, data: 201 generated scenes, metric: Acc@0.5 (%), value: 0}
limitations:
  - "Grounding does not work: every box is a guess."
  - Only 0.3 m aerial photos.
good_for:
"""


def model_folder(tmp_path: Path, card: str | None) -> Path:
    """A checkpoint folder as `skyeye info` reads it (the bundled model's config), with `card` as its card."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(bundled_model() / "skyeye.yaml", folder)
    if card is not None:
        (folder / CARD_FILE).write_text(card)
    return folder


def test_a_card_is_read_into_one_line_fields(tmp_path):
    card = read_card(model_folder(tmp_path, CARD))
    assert card.summary == "A test model, trained on nothing."  # YAML's folded text, made one line
    rows = [(score.skill, score.metric, score.value) for score in card.scores]
    assert rows == [("captioning", "CIDEr", 123.45), ("grounding", "Acc@0.5 (%)", 0.0)]
    assert card.limitations == ["Grounding does not work: every box is a guess.", "Only 0.3 m aerial photos."]
    assert card.good_for == []  # `good_for:` with nothing under it


def test_sources_without_a_card_have_none(tmp_path):
    assert read_card(model_folder(tmp_path, None)) is None
    assert read_card("tiny") is None  # a preset


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda text: text.replace("good_for:", "good_at:"), "good_at"),
        (lambda text: text.replace("value: 0}", "value: 0 %}"), "scores[1].value"),
        (lambda text: text.replace(", value: 0}", "}"), "scores[1].value"),
        (lambda text: text.replace("metric: CIDEr, ", ""), "scores[0].metric"),
        (lambda text: text.replace("  - Only 0.3 m aerial photos.", "  - {only: photos}"), "limitations[1]"),
        (lambda text: text.replace("limitations:\n", "limitations: none\n").replace("  - ", "  # "), "limitations"),
        (lambda text: text.replace("summary:", "about:"), "summary"),
        (lambda text: text.replace("scores:", "scores: [", 1), "line "),
        (lambda text: text + "#" * MAX_CARD_BYTES, "bytes"),
    ],
)  # fmt: skip
def test_a_bad_card_is_one_line_naming_the_file_and_the_field(change, field, tmp_path, capsys):
    folder = model_folder(tmp_path, change(CARD))
    assert main(["info", str(folder)]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip()
    assert "\n" not in error and error.startswith(f"skyeye: error: {folder / CARD_FILE}:") and field in error


def test_info_prints_the_summary_scores_and_limitations(tmp_path, capsys):
    folder = model_folder(tmp_path, CARD)
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"checkpoint {folder}"
    card = read_card(folder)
    assert card.summary in out
    assert all(limit in out for limit in card.limitations)
    score_lines = [line for line in out.splitlines() if "UCM-Captions val (210 images)" in line]
    assert len(score_lines) == 1 and "CIDEr" in score_lines[0] and score_lines[0].endswith("123.45")


def test_the_bundled_model_has_a_card_that_info_prints(capsys):
    card = read_card(bundled_model())
    assert card is not None and card.scores and card.good_for
    assert any("grounding" in limit.lower() for limit in card.limitations)
    assert any("sentinel-2" in limit.lower() for limit in card.limitations)  # out-of-domain imagery
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert card.summary in out and all(limit in out for limit in card.limitations)


def page_text(app) -> list[str]:
    """The Markdown shown at the top level of the page, in order: nothing folded away in an accordion or a tab."""
    import gradio as gr

    return [block.value for block in app.children if isinstance(block, gr.Markdown) and block.visible]


def test_the_web_page_shows_the_card_under_its_title(small_model, tmp_path):
    from skyeye.serve.web.app import build_app

    card = read_card(model_folder(tmp_path, CARD))
    title, note = page_text(build_app(small_model, [], card=card))[:2]
    assert title.startswith("## SkyEye")
    assert card.summary in note and all(limit in note for limit in card.limitations)
    assert len(note.splitlines()) <= 2 and "Known limits" in note
    assert not any("Known limits" in text for text in page_text(build_app(small_model, [])))


def test_skyeye_web_serves_the_models_card(monkeypatch):
    import skyeye.cli
    import skyeye.serve.web.app

    served = {}
    monkeypatch.setattr(skyeye.cli, "_load", lambda args: "the model")
    monkeypatch.setattr(skyeye.serve.web.app, "serve", lambda model, *args, **options: served.update(options))
    assert main(["web"]) == 0
    assert served["card"] == read_card(bundled_model())
