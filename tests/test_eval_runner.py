"""`skyeye eval`: suites read native splits, answers are saved and resumed, scores come from the metric code."""

import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from skyeye.eval.runner import PREDICTIONS_FILE, read_predictions, run_suite, score
from skyeye.eval.suites import Layout, Suite, load_suites, read_items
from skyeye.eval.table import format_table

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="captioning metrics need Java")


@dataclass
class Said:
    text: str
    prompt: str = "prompt"


class ScriptedModel:
    """Answers captions with the first reference it is given; records every question it was asked."""

    def __init__(self, answers: dict[str, str], fail_after: int | None = None):
        self.answers, self.fail_after, self.asked = answers, fail_after, []

    def ask_many(self, images, texts, tasks, batch_size, **generation):
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise KeyboardInterrupt
        self.asked += [image[0] for image in images]
        return [Said(self.answers[image[0].rsplit("/", 1)[-1]]) for image in images]


@pytest.fixture
def karpathy_root(tmp_path):
    folder = tmp_path / "caps"
    (folder / "imgs").mkdir(parents=True)
    entries = []
    captions = [("a green farmland", "many fields"), ("a long runway", "an airport strip"),
                ("a dense forest", "many trees"), ("a wide river", "water flows")]  # fmt: skip
    for i, (first, second) in enumerate(captions):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"imgs/{i}.png")
        entries.append({"filename": f"{i}.png", "imgid": i, "split": "test",
                        "sentences": [{"raw": first}, {"raw": second}]})  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps({"images": entries}))
    return tmp_path


def _suite() -> Suite:
    return Suite("tiny-captions", "captioning", "test", [Layout("karpathy", "elsewhere"), Layout("karpathy", "caps")])


def test_the_bundled_suites_are_valid_and_cover_the_papers_benchmarks():
    suites = load_suites()
    papers = ["ucm-captions", "sydney-captions", "rsicd", "nwpu-captions", "capera", "rsvqa-lr", "rsvqa-hr-test1"]
    papers += ["rsvqa-hr-test2", "rsvg-val", "rsvg-test", "dior-rsvg-test", "ucm-scene", "aid-scene", "rsivqa-ucm"]
    for name in papers:
        assert name in suites
    assert suites["ucm-captions"].paper["CIDEr"] == 236.75


def test_items_group_all_references_of_an_image_and_missing_data_is_named(karpathy_root, tmp_path):
    items, rejects = read_items(_suite(), karpathy_root)
    assert [item.reference["references"] for item in items][1] == ["a long runway", "an airport strip"]
    assert len(items) == 4 and not rejects and items[0].images == ["caps/imgs/0.png"]
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        read_items(_suite(), tmp_path / "nothing")


@needs_java
def test_an_interrupted_run_resumes_and_scores_like_the_metric(karpathy_root, tmp_path):
    from skyeye.eval.captioning import caption_scores

    answers = {f"{i}.png": text for i, text in enumerate(["a green farmland", "a runway", "trees", "a wide river"])}
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_suite(ScriptedModel(answers, fail_after=2), _suite(), karpathy_root, out, batch_size=2, progress=False)
    assert len(read_predictions(out / PREDICTIONS_FILE)) == 2

    model = ScriptedModel(answers)
    report = run_suite(model, _suite(), karpathy_root, out, batch_size=2, progress=False)
    assert [path.rsplit("/", 1)[-1] for path in model.asked] == ["2.png", "3.png"]
    rows = read_predictions(out / PREDICTIONS_FILE)
    assert [row["prediction"] for row in rows] == list(answers.values())
    items, _ = read_items(_suite(), karpathy_root)
    expected = caption_scores({i.id: i.reference["references"] for i in items},
                              {i.id: answers[i.id] for i in items})  # fmt: skip
    assert report["metrics"] == expected == score(_suite(), rows)
    assert json.loads((out / "metrics.json").read_text())["metrics"] == expected
    table = format_table(_suite(), report)
    assert f"{100 * expected['CIDEr']:.2f}" in table


def test_vqa_tables_put_published_numbers_beside_ours_and_count_apart():
    suite = Suite("rsvqa-lr", "vqa", "test", [Layout("rsvqa", "RSVQA_LR")], paper={"presence": 88.93, "AA": 84.19})
    rows = [{"prediction": p, "reference": {"answer": a, "question_type": t}}
            for p, a, t in [("yes", "yes", "presence"), ("no", "yes", "presence"), ("rural", "rural", "rural_urban"),
                            ("3", "4", "count")]]  # fmt: skip
    metrics = score(suite, rows)
    assert metrics["per_type"]["presence"]["accuracy"] == 0.5 and metrics["AA"] == 0.75
    table = format_table(suite, {"split": "test", "items": 4, "metrics": metrics})
    ours, paper = table.splitlines()[2:4]
    assert "50.00" in ours and "75.00" in ours and "88.93" in paper and "count" in table.splitlines()[1]


def test_reg_items_ask_for_a_box_and_keep_every_expression_of_it():
    from skyeye.data.sources.base import Example
    from skyeye.eval.suites import ITEM_BUILDERS

    def expression(key: str, box: list[float], text: str) -> Example:
        return Example("d", "test", key, "grounding", ["a.jpg"], (200, 100), {"expression": text, "box": box})

    items = ITEM_BUILDERS["reg"]([expression("0", [20, 10, 60, 50], "the tank"),
                                  expression("1", [20, 10, 60, 50], "a round tank"),
                                  expression("2", [0, 0, 100, 100], "the field")])  # fmt: skip
    assert [item.prompt for item in items] == ["this {<10><10><30><50>} is", "this {<0><0><50><100>} is"]
    assert items[0].reference["references"] == ["the tank", "a round tank"] and items[0].task == "identify"


@needs_java
def test_spice_that_cannot_run_is_skipped_with_a_warning_and_the_rest_is_scored(monkeypatch):
    import pycocoevalcap.spice.spice as spice_module

    from skyeye.eval.captioning import caption_scores

    class OfflineSpice:
        def __init__(self):
            raise OSError("could not download the Stanford CoreNLP models")

    monkeypatch.setattr(spice_module, "Spice", OfflineSpice)
    with pytest.warns(UserWarning, match="SPICE skipped.*Stanford CoreNLP"):
        scores = caption_scores({"a": ["a green farmland"]}, {"a": "a green farmland"}, spice=True)
    assert "SPICE" not in scores and scores["BLEU-1"] > 0.99
