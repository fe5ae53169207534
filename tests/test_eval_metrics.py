"""Evaluation metrics against hand-computed values: VQA and scene accuracy, grounding IoU, captioning scores."""

import shutil

import pytest

from skyeye.boxes import format_box, pixel_to_grid
from skyeye.eval.captioning import METRICS, caption_scores
from skyeye.eval.grounding import first_box_in_pixels, grounding_scores
from skyeye.eval.vqa import (
    answers_match,
    area_bin_hr,
    binned,
    count_bin_lr,
    normalize_answer,
    normalize_scene_name,
    scene_accuracy,
    vqa_scores,
)

# ----------------------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [("Four.", "4"), ("The river", "river"), ("YES", "yes"), (" two  ", "2"), ("yes.", "Yes"), ("twenty-two", "22")],
)
def test_answers_match_after_normalisation(prediction, reference):
    assert answers_match(prediction, reference)


@pytest.mark.parametrize(("prediction", "reference"), [("yes", "no"), ("four cars", "4"), ("2.5", "25"), ("the", "")])
def test_answers_that_differ_do_not_match(prediction, reference):
    assert not answers_match(prediction, reference)


def test_normalize_answer_rules():
    assert normalize_answer("  An   Airport, maybe!  ") == "airport maybe"
    assert normalize_answer("1,000") == "1000"
    assert normalize_answer("storage-tank/pool") == "storage tank pool"
    assert normalize_answer("The") == "the"  # an article alone is the answer, not a prefix


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0"), (5, "between 1 and 10"), (10, "between 1 and 10"), (11, "between 11 and 100"),
     (1000, "between 101 and 1000"), (1001, "more than 1000")],
)  # fmt: skip
def test_count_bin_lr(count, expected):
    assert count_bin_lr(count) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("0m2", "0m2"), ("45m2", "between 11m2 and 100m2"), ("1500m2", "more than 1000m2"),
     ("7 m2", "between 1m2 and 10m2"), ("1,000m2", "between 101m2 and 1000m2")],
)  # fmt: skip
def test_area_bins_through_binned(answer, expected):
    assert binned(answer, "area", "rsvqa-hr") == expected


def test_area_bin_hr_edges():
    assert area_bin_hr(10) == "between 1m2 and 10m2"
    assert area_bin_hr(10.5) == "between 11m2 and 100m2"
    assert area_bin_hr(101) == "between 101m2 and 1000m2"


def test_binned_applies_only_to_its_dataset_and_type():
    assert binned("Four.", "count", "rsvqa-lr") == "between 1 and 10"
    assert binned("1001", "count", "rsvqa-lr") == "more than 1000"
    assert binned("5", "count", "rsvqa-hr") == "5"  # HR counts are exact
    assert binned("5", "presence", "rsvqa-lr") == "5"
    assert binned("45m2", "area", "rsvqa-lr") == "45m2"
    # Text that is not a plain number stays as it is, so answers already written as bins keep their bin.
    assert binned("More than 1000", "count", "rsvqa-lr") == "more than 1000"
    assert binned("many", "count", "rsvqa-lr") == "many"
    assert binned("large", "area", "rsvqa-hr") == "large"


def test_bins_reject_negative_values():
    with pytest.raises(ValueError):
        count_bin_lr(-1)
    with pytest.raises(ValueError):
        area_bin_hr(-1)


def vqa_item(prediction, answer, question_type):
    return {"prediction": prediction, "answer": answer, "question_type": question_type}


def test_vqa_scores_by_type_with_count_apart():
    items = [
        # presence: 3 of 4 right -> 0.75
        vqa_item("Yes.", "yes", "presence"),
        vqa_item("no", "no", "presence"),
        vqa_item("NO", "no", "presence"),
        vqa_item("yes", "no", "presence"),
        # comp: 1 of 2 right -> 0.5
        vqa_item("yes", "yes", "comp"),
        vqa_item("no", "yes", "comp"),
        # count: 1 of 2 right -> 0.5
        vqa_item("three", "3", "count"),
        vqa_item("4", "12", "count"),
    ]
    scores = vqa_scores(items)
    assert scores["per_type"] == {
        "presence": {"accuracy": 0.75, "n": 4},
        "comp": {"accuracy": 0.5, "n": 2},
        "count": {"accuracy": 0.5, "n": 2},
    }
    assert scores["count"] == {"accuracy": 0.5, "n": 2}
    assert scores["AA"] == pytest.approx((0.75 + 0.5) / 2)  # 0.625
    assert scores["OA"] == pytest.approx(4 / 6)  # 3 + 1 right of 6 non-count questions
    assert scores["AA_with_count"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)  # 0.5833
    assert scores["OA_with_count"] == pytest.approx(5 / 8)


def test_vqa_scores_without_count_questions_has_no_count_entry():
    scores = vqa_scores([vqa_item("yes", "yes", "presence"), vqa_item("rural", "urban", "rural_urban")])
    assert "count" not in scores
    assert scores["AA"] == scores["AA_with_count"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert scores["OA"] == scores["OA_with_count"] == pytest.approx(0.5)


def test_vqa_scores_with_only_count_questions_has_no_aa():
    scores = vqa_scores([vqa_item("2", "2", "count")])
    assert scores["AA"] is None and scores["OA"] is None
    assert scores["AA_with_count"] == 1.0


def test_vqa_scores_bins_with_a_dataset():
    items = [vqa_item("7", "between 1 and 10", "count"), vqa_item("12", "5", "count")]
    assert vqa_scores(items)["count"]["accuracy"] == 0.0
    assert vqa_scores(items, dataset="rsvqa-lr")["count"]["accuracy"] == 0.5  # 7 is in 1..10; 12 is not


def test_vqa_scores_rejects_bad_input():
    with pytest.raises(ValueError, match="no items"):
        vqa_scores([])
    items = [vqa_item("yes", "yes", "presence"), {"prediction": "no", "answer": "no"}]
    with pytest.raises(ValueError, match="item 1 .*question_type"):
        vqa_scores(items)


# --------------------------------------------------------------------------------------------------- scenes


def test_normalize_scene_name():
    assert normalize_scene_name("Storage_tanks.") == "storage tanks"
    assert normalize_scene_name("  dense-residential  area ") == "dense residential area"


def test_scene_accuracy():
    items = [
        {"prediction": "baseballdiamond", "answer": "baseball diamond"},  # right: spaces are ignored
        {"prediction": "Storage_tanks", "answer": "storage tanks"},  # right
        {"prediction": "river.", "answer": "River"},  # right
        {"prediction": "forest", "answer": "River"},  # wrong
    ]
    assert scene_accuracy(items) == {
        "accuracy": 0.75,
        "n": 4,
        "per_class": {"baseball diamond": 1.0, "storage tanks": 1.0, "river": 0.5},
    }


def test_scene_answers_naming_no_class_of_their_list_are_counted_by_answer_and_as_another_name_of_the_class():
    offered = ["river", "forest", "baseball diamond"]
    items = [
        {"prediction": "stream", "answer": "river", "classes": offered},
        {"prediction": "Stream.", "answer": "river", "classes": offered},
        {"prediction": "woodland", "answer": "forest", "classes": offered},
        {"prediction": "forest", "answer": "river", "classes": offered},  # wrong, but a class of the list
        {"prediction": "baseballdiamond", "answer": "baseball diamond", "classes": offered},
        {"prediction": "harbor", "answer": "forest", "classes": offered},  # off the list and not the right class
    ]
    scores = scene_accuracy(items)
    assert scores["accuracy"] == pytest.approx(1 / 6)
    assert scores["off_list"] == {"count": 4, "another_name": 3, "answers": {"stream": 2, "woodland": 1, "harbor": 1}}
    assert "off_list" not in scene_accuracy([{key: item[key] for key in ("prediction", "answer")} for item in items])


def test_scene_accuracy_rejects_bad_input():
    with pytest.raises(ValueError):
        scene_accuracy([])
    with pytest.raises(ValueError, match="item 0"):
        scene_accuracy([{"prediction": "river"}])


# ------------------------------------------------------------------------------------------------ grounding


def box_item(prediction, box, image_size=(100, 100)):
    return {"prediction": prediction, "box": list(box), "image_size": list(image_size)}


def only_iou(prediction, box, image_size=(100, 100)):
    return grounding_scores([box_item(prediction, box, image_size)])["mean_IoU"]


def test_first_box_in_pixels_on_a_non_square_image():
    # 200 x 50 image: grid x scales by 2, grid y by 0.5.
    assert first_box_in_pixels("<p>ship</p> {<10><20><30><40>}", 200, 50) == (20.0, 10.0, 60.0, 20.0)
    assert first_box_in_pixels("no box here", 200, 50) is None


def test_touching_boxes_have_iou_zero():
    assert only_iou("{<0><0><50><50>}", (50, 0, 100, 50)) == 0.0


def test_nested_boxes_have_the_area_ratio():
    # Reference 50 x 50 inside a predicted 100 x 100: IoU = 2500 / 10000.
    scores = grounding_scores([box_item("{<0><0><100><100>}", (25, 25, 75, 75))])
    assert scores["mean_IoU"] == pytest.approx(0.25)
    assert scores["Acc@0.25"] == 1.0  # IoU >= t counts
    assert scores["Acc@0.5"] == 0.0


def test_disjoint_boxes_miss():
    scores = grounding_scores([box_item("{<0><0><10><10>}", (60, 60, 90, 90))])
    assert scores["mean_IoU"] == 0.0 and scores["misses"] == 0  # a wrong box is not a missing one


def test_degenerate_boxes_score_zero():
    assert only_iou("{<10><10><50><50>}", (20, 20, 20, 40)) == 0.0  # zero-area reference
    assert only_iou("{<10><10><10><50>}", (0, 0, 50, 50)) == 0.0  # zero-area prediction
    assert only_iou("{<10><10><10><50>}", (10, 10, 10, 50)) == 0.0  # both: union 0


def test_answer_without_a_box_is_a_miss():
    scores = grounding_scores([box_item("The plane is at the top left.", (0, 0, 10, 10))])
    assert scores["misses"] == 1 and scores["mean_IoU"] == 0.0 and scores["Acc@0.25"] == 0.0


def test_first_of_two_boxes_counts():
    text = "{<0><0><50><50>}<delim>{<50><0><100><50>}"
    assert only_iou(text, (0, 0, 50, 50)) == 1.0
    assert only_iou(text, (50, 0, 100, 50)) == 0.0


def test_accuracy_at_each_threshold():
    items = [
        box_item("{<0><0><100><100>}", (0, 0, 100, 30)),  # IoU 0.3
        box_item("{<0><0><100><100>}", (0, 0, 100, 60)),  # IoU 0.6
        box_item("{<0><0><100><100>}", (0, 0, 100, 80)),  # IoU 0.8
        box_item("{<0><0><100><100>}", (0, 0, 100, 95)),  # IoU 0.95
    ]
    scores = grounding_scores(items)
    assert (scores["Acc@0.25"], scores["Acc@0.5"], scores["Acc@0.75"], scores["Acc@0.9"]) == (1.0, 0.75, 0.5, 0.25)
    assert scores["n"] == 4
    assert grounding_scores(items, thresholds=(0.7,))["Acc@0.7"] == 0.5  # 0.8 and 0.95


def test_grid_round_trip_on_a_non_square_image():
    width, height = 640, 480
    big = (101, 77, 590, 455)
    assert only_iou(format_box(pixel_to_grid(big, width, height)), big, (width, height)) > 0.95

    # (100, 100, 500, 400) -> grid (15, 20, 78, 83) [100/640*100 = 15.6, 100/480*100 = 20.8, 78.1, 83.3]
    # -> pixels (96, 96, 499.2, 398.4). Intersection 399.2 x 298.4 = 119121.28; reference 400 x 300 = 120000;
    # prediction 403.2 x 302.4 = 121927.68; union = 120000 + 121927.68 - 119121.28 = 122806.4.
    box = (100, 100, 500, 400)
    assert pixel_to_grid(box, width, height) == (15, 20, 78, 83)
    assert only_iou(format_box(pixel_to_grid(box, width, height)), box, (width, height)) == pytest.approx(
        119121.28 / 122806.4
    )

    # A small box loses most of its IoU to the grid: (3, 3, 9, 9) -> grid (0, 0, 1, 1) -> (0, 0, 6.4, 4.8).
    # Intersection 3.4 x 1.8 = 6.12; union = 36 + 30.72 - 6.12 = 60.6.
    small = (3, 3, 9, 9)
    assert only_iou(format_box(pixel_to_grid(small, width, height)), small, (width, height)) == pytest.approx(
        6.12 / 60.6
    )


def test_cumulative_iou_weighs_big_boxes():
    items = [
        box_item("{<0><0><100><100>}", (0, 0, 50, 100)),  # I 5000, U 10000, IoU 0.5
        box_item("{<0><0><10><10>}", (0, 0, 10, 10)),  # I 100, U 100, IoU 1
    ]
    scores = grounding_scores(items)
    assert scores["mean_IoU"] == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert scores["cumulative_IoU"] == pytest.approx(5100 / 10100)


def test_cumulative_iou_counts_a_miss_as_its_reference_area():
    items = [
        box_item("{<0><0><10><10>}", (0, 0, 10, 10)),  # I 100, U 100
        box_item("no idea", (0, 0, 30, 30)),  # miss: I 0, U 900
    ]
    scores = grounding_scores(items)
    assert scores["misses"] == 1
    assert scores["mean_IoU"] == pytest.approx(0.5)
    assert scores["cumulative_IoU"] == pytest.approx(100 / 1000)


def test_grounding_scores_rejects_bad_input():
    with pytest.raises(ValueError, match="no items"):
        grounding_scores([])
    with pytest.raises(ValueError, match="item 1 .*image_size"):
        grounding_scores([box_item("{<0><0><1><1>}", (0, 0, 1, 1)), {"prediction": "", "box": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match="item 0"):
        grounding_scores([box_item("{<0><0><1><1>}", (0, 0, 1, 1), image_size=(0, 10))])


# ----------------------------------------------------------------------------------------------- captioning

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's tokenizer and METEOR need Java")

CAPTION_REFERENCES = {
    "1": ["Many planes are parked at the airport.", "Several airplanes stand next to the terminal.",
          "Some planes are parked near a building."],
    "2": ["A river runs through the green forest.", "A winding river passes through dense trees."],
    "3": ["There are many buildings in a dense residential area.", "Lots of houses are arranged closely.",
          "A dense residential area with many houses."],
    "4": ["A baseball field is surrounded by green trees.", "There is a baseball diamond next to some trees."],
}  # fmt: skip
CAPTION_HYPOTHESES = {
    "1": "many planes are parked near the terminal",
    "2": "a river goes through a forest",
    "3": "many houses in a dense residential area",
    "4": "a baseball field next to a road",
}


@needs_java
def test_caption_scores_equal_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in CAPTION_REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in CAPTION_HYPOTHESES.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"BLEU-{n}": bleu[n - 1] for n in range(1, 5)}
    expected["METEOR"] = Meteor().compute_score(gts, res)[0]
    expected["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]

    scores = caption_scores(CAPTION_REFERENCES, CAPTION_HYPOTHESES)
    assert set(scores) == set(METRICS)
    for metric in METRICS:
        assert scores[metric] == pytest.approx(expected[metric], abs=1e-9), metric
    assert 0 < scores["BLEU-4"] < scores["BLEU-1"] < 1  # a partly right fixture, not a degenerate one


@needs_java
def test_caption_identical_to_a_reference_scores_full_bleu():
    hypotheses = {key: refs[-1] for key, refs in CAPTION_REFERENCES.items()}
    scores = caption_scores(CAPTION_REFERENCES, hypotheses)
    assert scores["BLEU-4"] > 0.999
    assert scores["ROUGE-L"] > 0.999


def test_caption_scores_reject_mismatched_keys():
    # The check runs before any Java is started, so it needs no Java.
    with pytest.raises(ValueError, match="differ"):
        caption_scores(CAPTION_REFERENCES, {**CAPTION_HYPOTHESES, "5": "an extra caption"})
    with pytest.raises(ValueError, match="differ"):
        caption_scores(CAPTION_REFERENCES, {k: v for k, v in CAPTION_HYPOTHESES.items() if k != "4"})


@pytest.mark.parametrize(
    ("hits", "n", "low", "high"),
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson score).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_the_wilson_interval_matches_newcombes_published_examples(hits, n, low, high):
    from skyeye.eval.interval import wilson_interval

    assert wilson_interval(hits / n, n) == pytest.approx((low, high), abs=5e-5)


def test_tables_of_proportions_say_how_wide_their_interval_is_and_caption_tables_do_not():
    from skyeye.eval.runner import score
    from skyeye.eval.suites import Suite
    from skyeye.eval.table import format_table

    scene = Suite("aid-scene", "scene", "val", [])
    rows = [{"prediction": p, "reference": {"answer": "forest", "classes": ["forest", "river"]}}
            for p in ["forest"] * 7 + ["river"] * 50]  # fmt: skip
    table = format_table(scene, {"split": "val", "items": 57, "metrics": score(scene, rows)})
    from skyeye.eval.interval import wilson_interval

    low, high = wilson_interval(7 / 57, 57)
    assert f"accuracy 12.28 on 57 items: 95% interval {100 * low:.1f}-{100 * high:.1f} (Wilson)" in table
    captions = Suite("ucm-captions", "captioning", "test", [])
    metrics = {"BLEU-4": 0.5, "CIDEr": 2.0}
    assert "interval" not in format_table(captions, {"split": "val", "items": 3, "metrics": metrics})
