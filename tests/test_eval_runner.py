"""`skyeye eval`: suites read native splits, answers are saved and resumed, scores come from the metric code."""

import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from skyeye.eval.record import RUN_FILE
from skyeye.eval.runner import METRICS_FILE, PREDICTIONS_FILE, read_predictions, run_suite, score
from skyeye.eval.suites import Layout, Suite, load_suites, read_items
from skyeye.eval.table import format_table
from skyeye.model.tokenizer import bundled_path, load_tokenizer

from conftest import small_config

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="captioning metrics need Java")


@dataclass
class Said:
    text: str
    prompt: str = "prompt"


class ScriptedModel:
    """Answers from a script keyed by image file name (else `default`); records every question it was asked.

    It has what a run's record reads of a model: a config, a tokenizer and weights (`weights_seed` picks them).
    """

    def __init__(self, answers: dict[str, str] | None = None, fail_after: int | None = None, default: str = "",
                 weights_seed: int = 0, prompt_style: str = "skyeye"):  # fmt: skip
        self.answers, self.fail_after, self.default, self.asked = answers or {}, fail_after, default, []
        self.questions = []  # (image file name, text, task, the conversation before it) of every question
        self.cfg = small_config(prompt_style=prompt_style)
        self.tokenizer = load_tokenizer(bundled_path("tokenizer-tiny"))
        self.weights = {"w": torch.randn(8, 8, generator=torch.Generator().manual_seed(weights_seed))}

    def state_dict(self):
        return dict(self.weights)

    def ask_many(self, images, texts, tasks, batch_size, **generation):
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise KeyboardInterrupt
        self.asked += [image[0] for image in images]
        return [Said(self.answers.get(image[0].rsplit("/", 1)[-1], self.default)) for image in images]

    def iter_answers(self, images, texts, tasks, batch_size, histories=None, **generation):
        histories = histories or [None] * len(texts)
        for start in range(0, len(texts), batch_size):
            span = slice(start, start + batch_size)
            asked = zip(images[span], texts[span], tasks[span], histories[span], strict=True)
            self.questions += [(image[0].rsplit("/", 1)[-1], text, task, history)
                               for image, text, task, history in asked]  # fmt: skip
            yield self.ask_many(images[span], texts[span], tasks[span], batch_size, **generation)


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


@needs_java
def test_a_suite_with_an_opening_asks_each_item_after_the_models_own_answer_to_it(karpathy_root, tmp_path):
    suite = Suite("tiny-chat", "captioning", "test", [Layout("karpathy", "caps")], opening="What do you see?")
    described = {f"{i}.png": f"scene {i}" for i in range(4)}
    model = ScriptedModel(described)
    out = tmp_path / "out"
    report = run_suite(model, suite, karpathy_root, out, batch_size=3, progress=False)

    openings = [q for q in model.questions if q[1] == "What do you see?" and q[3] is None]
    assert [(name, task) for name, _, task, _ in openings] == [(f"{i}.png", None) for i in range(4)]
    items = model.questions[len(openings) :]
    assert len(items) == 4 and all(task is None for _, _, task, _ in items), "asked as a chat user asks"
    for name, _, _, history in items:
        assert [(t.user, t.assistant) for t in history.turns] == [("What do you see?", described[name])]
    rows = read_predictions(out / PREDICTIONS_FILE)
    assert [row["opening"]["assistant"] for row in rows] == list(described.values())
    assert report["run"]["opening"] == "What do you see?"

    suite.opening = "What is this?"
    with pytest.raises(ValueError, match="opening"):
        run_suite(ScriptedModel(described), suite, karpathy_root, out, batch_size=3, progress=False)


def test_vqa_tables_put_published_numbers_beside_ours_and_count_apart():
    suite = Suite("rsvqa-lr", "vqa", "test", [Layout("rsvqa", "RSVQA_LR")], paper={"presence": 88.93, "AA": 84.19})
    rows = [{"prediction": p, "reference": {"answer": a, "question_type": t}}
            for p, a, t in [("yes", "yes", "presence"), ("no", "yes", "presence"), ("rural", "rural", "rural_urban"),
                            ("3", "4", "count")]]  # fmt: skip
    metrics = score(suite, rows)
    assert metrics["per_type"]["presence"]["accuracy"] == 0.5 and metrics["AA"] == 0.75
    table = format_table(suite, {"split": "test", "items": 4, "metrics": metrics})
    ours, paper = table.splitlines()[3:5]
    assert "50.00" in ours and "75.00" in ours and "88.93" in paper and "count" in table.splitlines()[2]


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


BOX = "{<10><10><50><50>}"


def _synthetic_suite() -> Suite:
    """Rendered scenes, small: a Java-free suite (grounding) whose data root needs no files."""
    return Suite("synthetic-grounding", "grounding", "val", [Layout("synthetic", "scenes", {"n": 6, "size": 96})])


def _run(model, root, out, **options) -> dict:
    return run_suite(model, _synthetic_suite(), root, out, batch_size=2, progress=False, **options)


def _interrupted(root, out, after: int = 2) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(ScriptedModel(default=BOX, fail_after=after), root, out)


@pytest.mark.parametrize(
    "model_options, run_options, named",
    [
        ({"weights_seed": 1}, {}, "model: "),
        ({"prompt_style": "minigptv2"}, {}, "prompt_style: 'skyeye' there, 'minigptv2' now"),
        ({}, {"split": "test"}, "split: 'val' there, 'test' now"),
        ({}, {"num_beams": 3}, "decoding.num_beams: 1 there, 3 now"),
        ({}, {"max_new_tokens": 8}, "decoding.max_new_tokens: 64 there, 8 now"),
        ({}, {"listed_only": False}, "decoding.listed_only: True there, False now"),
        ({}, {"refine_boxes": False}, "decoding.refine_boxes: True there, False now"),
        ({}, {"limit": 1}, "limit: None there, 1 now"),
    ],
)
def test_another_run_refuses_the_saved_predictions_naming_what_differs_until_restart(
    tmp_path, model_options, run_options, named
):
    out = tmp_path / "out"
    _interrupted(tmp_path, out)
    saved = (out / PREDICTIONS_FILE).read_bytes()
    model = ScriptedModel(default="{<0><0><100><100>}", **model_options)
    with pytest.raises(ValueError, match="another run") as refused:
        _run(model, tmp_path, out, **run_options)
    assert named in str(refused.value) and "--restart" in str(refused.value)
    assert model.asked == [] and (out / PREDICTIONS_FILE).read_bytes() == saved

    report = _run(model, tmp_path, out, restart=True, **run_options)
    rows = read_predictions(out / PREDICTIONS_FILE)
    assert len(model.asked) == len(rows) == report["items"]
    assert {row["prediction"] for row in rows} == {"{<0><0><100><100>}"}


def test_the_same_run_resumes_whatever_folder_the_model_came_from_and_whatever_the_batch_size(tmp_path):
    out = tmp_path / "out"
    _interrupted(tmp_path, out)
    model = ScriptedModel(default=BOX)
    report = run_suite(model, _synthetic_suite(), tmp_path, out, batch_size=3, progress=False,
                       model_source="a/copy/of/the/same/weights")  # fmt: skip
    items, _ = read_items(_synthetic_suite(), tmp_path)
    assert len(model.asked) == len(items) - 2 == report["items"] - 2


def test_a_run_records_what_produced_it_before_answering_and_shows_it_with_the_numbers(tmp_path, capsys):
    from skyeye.cli import main
    from skyeye.model.fingerprint import model_fingerprint

    out = tmp_path / "out"
    _interrupted(tmp_path, out, after=0)
    assert not (out / PREDICTIONS_FILE).exists() or not read_predictions(out / PREDICTIONS_FILE)
    model = ScriptedModel(default=BOX, prompt_style="minigptv2")
    recorded = json.loads((out / RUN_FILE).read_text())
    assert recorded["prompt_style"] == "skyeye"  # the interrupted run's
    report = _run(model, tmp_path, out, model_source="my-model", num_beams=2)
    run = json.loads((out / RUN_FILE).read_text())
    assert run == report["run"] == json.loads((out / METRICS_FILE).read_text())["run"]
    assert run["prompt_style"] == "minigptv2" and run["model"]["fingerprint"] == model_fingerprint(model)
    assert run["decoding"]["num_beams"] == 2 and run["split"] == "val"
    header = format_table(_synthetic_suite(), report).splitlines()[1]
    assert "my-model" in header and run["model"]["fingerprint"] in header and "prompt style minigptv2" in header

    assert main(["eval", "score", str(out / PREDICTIONS_FILE)]) == 0
    assert "prompt style minigptv2" in capsys.readouterr().out


def test_predictions_without_a_run_record_are_not_resumed_but_still_score(tmp_path, capsys):
    from skyeye.cli import main

    out = tmp_path / "out"
    _interrupted(tmp_path, out)
    (out / RUN_FILE).unlink()  # as an older SkyEye left them
    model = ScriptedModel(default=BOX)
    with pytest.raises(ValueError, match=f"no {RUN_FILE} says what produced them"):
        _run(model, tmp_path, out)
    assert model.asked == []
    assert main(["eval", "score", str(out / PREDICTIONS_FILE)]) == 0
    assert "produced by: unknown" in capsys.readouterr().out


def test_a_truncated_last_line_is_dropped_said_and_its_item_asked_again(tmp_path, capsys):
    out = tmp_path / "out"
    _interrupted(tmp_path, out)
    path = out / PREDICTIONS_FILE
    first, second = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(first + second[:30])  # killed while writing the second row
    model = ScriptedModel(default=BOX)
    _run(model, tmp_path, out)
    assert f"{path}:2: dropped 1 truncated last line" in capsys.readouterr().err
    items, _ = read_items(_synthetic_suite(), tmp_path)
    lost = json.loads(second)
    assert model.asked[0].endswith(lost["images"][0]) and len(model.asked) == len(items) - 1
    assert [row["id"] for row in read_predictions(path)] == [json.loads(first)["id"]] + [i.id for i in items[1:]]


def test_a_last_row_cut_before_its_newline_is_kept_and_the_next_row_starts_a_line(tmp_path):
    out = tmp_path / "out"
    _interrupted(tmp_path, out)
    path = out / PREDICTIONS_FILE
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    model = ScriptedModel(default=BOX)
    report = _run(model, tmp_path, out)
    assert len(model.asked) == report["items"] - 2 == len(read_predictions(path)) - 2


def test_a_corrupt_line_before_the_last_is_an_error_naming_it(tmp_path):
    out = tmp_path / "out"
    _interrupted(tmp_path, out)
    path = out / PREDICTIONS_FILE
    first, second = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(first[:30] + b"\n" + second)
    with pytest.raises(ValueError, match=f"{path}:1: not valid JSON"):
        _run(ScriptedModel(default=BOX), tmp_path, out)


def test_a_missing_java_stops_a_captioning_run_before_any_item_is_asked(karpathy_root, tmp_path, monkeypatch, capsys):
    from skyeye import cli
    from skyeye.eval.captioning import JavaMissing

    monkeypatch.setattr("skyeye.eval.captioning.shutil.which", lambda name: None)
    model = ScriptedModel(default="a field")
    with pytest.raises(JavaMissing, match="need Java"):
        run_suite(model, _suite(), karpathy_root, tmp_path / "out", progress=False)
    assert model.asked == [] and not (tmp_path / "out" / PREDICTIONS_FILE).exists()

    shutil.copytree(karpathy_root / "caps", karpathy_root / "ucm_captions")
    monkeypatch.setattr(cli, "_load", lambda args: pytest.fail("the model was loaded though Java is missing"))
    assert cli.main(["eval", "ucm-captions", "--data-root", str(karpathy_root), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("skyeye: error: captioning metrics need Java") and "\n" not in error


def test_the_readme_synthetic_grounding_command_renders_its_scenes_and_refuses_another_model(
    tmp_path, monkeypatch, capsys
):
    from skyeye import cli

    suites = load_suites()
    suites["synthetic-grounding"].layouts[0].options.update(n=6, size=96)  # fewer, smaller scenes: a fast test
    monkeypatch.setattr("skyeye.eval.commands.load_suites", lambda: suites)
    monkeypatch.chdir(tmp_path)
    command = ["eval", "synthetic-grounding", "--data-root", "data/synth-eval", "--no-progress"]  # the README's
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert len(list((tmp_path / "data/synth-eval/images").glob("val-*.png"))) == 6
    metrics = json.loads((tmp_path / "runs/eval/synthetic-grounding" / METRICS_FILE).read_text())
    assert metrics["items"] > 0 and metrics["run"]["model"]["fingerprint"] in printed

    assert cli.main(command + ["--model", "tiny"]) == 2
    error = capsys.readouterr().err
    assert "another run (model: " in error and "--restart" in error
    assert cli.main(command + ["--model", "tiny", "--restart"]) == 0
