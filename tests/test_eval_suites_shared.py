"""The suites on the shared data layouts: NWPU VHR-10 unique-object grounding, AID and UC Merced scenes.

Generated fixtures check that each suite reads the right split, builds the right items and scores them; the
real-data tests (skipped without ../shared/data or $SKYEYE_DATA) check the item counts on the shared layouts.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from skyeye.boxes import format_box, pixel_to_grid
from skyeye.class_lists import SCENE
from skyeye.data.sources.base import ADAPTERS, SourceContext
from skyeye.data.sources.class_names import readable
from skyeye.eval.grounding import grounding_scores
from skyeye.eval.runner import run_suite
from skyeye.eval.suites import load_suites, read_items, singled_out
from skyeye.eval.table import format_table
from skyeye.eval.vqa import scene_accuracy
from skyeye.model.tokenizer import bundled_path, load_tokenizer
from skyeye.prompts import with_task
from skyeye.settings import ConfigError

from conftest import real_data, small_config

# The split the training recipe uses for NWPU VHR-10 and AID (seeded, hashed per image or per class).
TRAINING_SPLIT = {"split_fractions": {"train": 0.8, "val": 0.2}, "seed": 0}
NWPU_CLASSES = ("airplane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
                "ground track field", "harbor", "bridge", "vehicle")  # fmt: skip
UCM_FOLDERS = ("agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
               "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
               "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks",
               "tenniscourt")  # fmt: skip


@dataclass
class Said:
    text: str
    prompt: str


class ScriptedModel:
    """Answers `answers[(image file name, prompt)]`, else `default`; has what a run's record reads of a model."""

    def __init__(self, answers: dict[tuple[str, str], str], default: str = ""):
        self.answers, self.default = answers, default
        self.cfg = small_config()
        self.tokenizer = load_tokenizer(bundled_path("tokenizer-tiny"))

    def state_dict(self):
        return {"w": torch.zeros(2, 2)}

    def iter_answers(self, images, texts, tasks, batch_size, **generation):
        said = [Said(self.answers.get((Path(image[0]).name, text), self.default), with_task(text, task))
                for image, text, task in zip(images, texts, tasks, strict=True)]  # fmt: skip
        for start in range(0, len(said), batch_size):
            yield said[start : start + batch_size]


def image(path: Path, size=(64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 110, 100)).save(path)


def adapter_keys(adapter: str, root: Path, folder: str, split: str, options: dict) -> set[str]:
    return {e.key for e in ADAPTERS[adapter](SourceContext(root, folder, adapter, split, dict(options)))}


def evaluate(name: str, root: Path, out: Path, model: ScriptedModel) -> dict:
    return run_suite(model, load_suites()[name], root, out, batch_size=4, progress=False)


# -------------------------------------------------------------------------------------- nwpu-vhr10-grounding

# Per image: two airplanes (not asked: not unique), one ship and one ground track field (asked), in pixels.
NWPU_LINES = "(10,10),(30,30),1\r\n( 40,10),(60,30),1\r\n(100,50),(140,90),2\r\n(20,100),(180,190),7\r\n"


@pytest.fixture
def nwpu_root(tmp_path: Path) -> Path:
    folder = tmp_path / "nwpu_vhr10"
    for index in range(1, 21):
        (folder / "ground truth").mkdir(parents=True, exist_ok=True)
        (folder / "ground truth" / f"{index:03d}.txt").write_text(NWPU_LINES)
        image(folder / "positive image set" / f"{index:03d}.jpg", (200, 250))
    return tmp_path


def test_nwpu_grounding_asks_every_unique_object_of_the_held_out_images(nwpu_root: Path):
    items, rejects = read_items(load_suites()["nwpu-vhr10-grounding"], nwpu_root)
    val = adapter_keys("nwpu_vhr10", nwpu_root, "nwpu_vhr10", "val", TRAINING_SPLIT)
    train = adapter_keys("nwpu_vhr10", nwpu_root, "nwpu_vhr10", "train", TRAINING_SPLIT)
    assert not rejects and len(val) == 4 and not val & train  # 20% of 20 images, none trained on
    assert {Path(item.images[0]).stem for item in items} == val
    assert len(items) == 2 * len(val)  # the ship and the ground track field of each image, not the airplanes
    asked = {(item.prompt, tuple(item.reference["box"])) for item in items}
    assert asked == {("the ship", (100, 50, 140, 90)), ("the ground track field", (20, 100, 180, 190))}
    prompts = {with_task(item.prompt, item.task) for item in items}
    assert prompts == {"[refer] the ship", "[refer] the ground track field"}
    assert all(item.reference["image_size"] == [200, 250] for item in items)
    assert len({item.id for item in items}) == len(items)


def test_nwpu_grounding_of_repeated_classes_asks_the_objects_a_place_singles_out(nwpu_root: Path):
    items, rejects = read_items(load_suites()["nwpu-vhr10-grounding-repeated"], nwpu_root)
    val = adapter_keys("nwpu_vhr10", nwpu_root, "nwpu_vhr10", "val", TRAINING_SPLIT)
    assert not rejects and {Path(item.images[0]).stem for item in items} == val
    asked = {(item.prompt, tuple(item.reference["box"]), item.reference["class"]) for item in items}
    # The two airplanes sit side by side at the same height and size: only left and right tell them apart.
    assert asked == {("the leftmost airplane", (10, 10, 30, 30), "airplane"),
                     ("the rightmost airplane", (40, 10, 60, 30), "airplane")}  # fmt: skip
    assert len(items) == 2 * len(val) and len({item.id for item in items}) == len(items)


def test_an_object_of_a_repeated_class_is_singled_out_only_by_a_clear_place_or_size():
    ships = [[10.0, 10.0, 50.0, 40.0], [20.0, 60.0, 60.0, 90.0], [30.0, 100.0, 230.0, 190.0]]  # overlap left to right
    found = {(obj.expression, tuple(obj.box)) for obj in singled_out([{"name": "ship", "box": b} for b in ships])}
    assert found == {("the topmost ship", tuple(ships[0])), ("the bottommost ship", tuple(ships[2])),
                     ("the largest ship", tuple(ships[2]))}  # fmt: skip
    overlapping = [[10.0, 20.0, 60.0, 70.0], [40.0, 40.0, 90.0, 90.0]]  # the same size
    assert singled_out([{"name": "plane", "box": box} for box in overlapping]) == []
    alone = singled_out([{"name": "bridge", "box": [1.0, 2.0, 3.0, 4.0]}])
    assert [(obj.expression, obj.alone) for obj in alone] == [("the bridge", True)]


def test_a_suite_asking_repeated_objects_must_be_a_grounding_suite(tmp_path: Path):
    suites = tmp_path / "suites.yaml"
    layout = "  layouts: [{adapter: nwpu_vhr10, path: nwpu_vhr10}]\n"
    suites.write_text("odd:\n  metric: grounding\n  split: val\n  objects: all\n" + layout)
    with pytest.raises(ConfigError, match=r"suites.yaml: odd.objects 'all': one of \['unique', 'repeated'\]"):
        load_suites(suites)
    suites.write_text("odd:\n  metric: vqa\n  split: val\n  objects: repeated\n" + layout)
    with pytest.raises(ConfigError, match="odd.objects 'repeated'.*for grounding"):
        load_suites(suites)


def test_nwpu_grounding_scores_boxes_in_pixels_per_class(nwpu_root: Path, tmp_path: Path):
    ship = format_box(pixel_to_grid([100, 50, 140, 90], 200, 250))
    wrong = format_box(pixel_to_grid([0, 0, 40, 40], 200, 250))
    answers = {(f"{n:03d}.jpg", "the ship"): f"It is at {ship}." for n in range(1, 21)}
    answers |= {(f"{n:03d}.jpg", "the ground track field"): wrong for n in range(1, 21)}
    report = evaluate("nwpu-vhr10-grounding", nwpu_root, tmp_path / "out", ScriptedModel(answers))
    metrics = report["metrics"]
    assert report["items"] == 8 and metrics["Acc@0.5"] == 0.5 and metrics["misses"] == 0
    assert metrics["per_class"] == {"ground track field": {"Acc@0.5": 0.0, "n": 4}, "ship": {"Acc@0.5": 1.0, "n": 4}}
    assert "ship 100.0 (4)" in format_table(load_suites()["nwpu-vhr10-grounding"], report)


def test_the_native_nwpu_release_folder_is_read_first(nwpu_root: Path):
    (nwpu_root / "nwpu_vhr10").rename(nwpu_root / "NWPU VHR-10 dataset")
    (nwpu_root / "nwpu_vhr10").mkdir()  # an empty shared layout beside it is not read
    items, _ = read_items(load_suites()["nwpu-vhr10-grounding"], nwpu_root)
    assert len(items) == 8 and all(item.images[0].startswith("NWPU VHR-10 dataset/") for item in items)


def test_grounding_per_class_accuracy_only_when_every_item_names_its_class():
    right = {"prediction": "{<0><0><50><50>}", "box": [0, 0, 100, 100], "image_size": [200, 200]}
    wrong = {**right, "prediction": "{<60><60><90><90>}"}
    scores = grounding_scores([{**right, "class": "ship"}, {**wrong, "class": "ship"}, {**wrong, "class": "bridge"}])
    assert scores["per_class"] == {"bridge": {"Acc@0.5": 0.0, "n": 1}, "ship": {"Acc@0.5": 0.5, "n": 2}}
    assert "per_class" not in grounding_scores([right, {**wrong, "class": "ship"}])


# ------------------------------------------------------------------------------------------------ aid-scene

AID_FOLDERS = ("Airport", "BareLand", "StorageTanks")


@pytest.fixture
def aid_root(tmp_path: Path) -> Path:
    for folder in AID_FOLDERS:
        for n in range(1, 11):
            image(tmp_path / "aid_150px" / "AID" / folder / f"{folder.lower()}_{n}.jpg", (30, 30))
    return tmp_path


def test_aid_scene_reads_the_held_out_fifth_of_each_class_with_the_class_list_prompt(aid_root: Path):
    items, rejects = read_items(load_suites()["aid-scene"], aid_root)
    folder = "aid_150px/AID"
    train = adapter_keys("class_folders", aid_root, folder, "train", TRAINING_SPLIT)
    assert not rejects and len(items) == 6 and not {item.id for item in items} & train
    assert {item.id for item in items} == adapter_keys("class_folders", aid_root, folder, "val", TRAINING_SPLIT)
    assert Counter(item.reference["answer"] for item in items) == {"airport": 2, "bare land": 2, "storage tanks": 2}
    prompt = SCENE.format(classes="airport, bare land, storage tanks")
    assert {with_task(item.prompt, item.task) for item in items} == {f"[vqa] {prompt}"}


def test_aid_scene_scores_the_class_named_once_whatever_its_case_article_or_period(aid_root: Path, tmp_path: Path):
    items, _ = read_items(load_suites()["aid-scene"], aid_root)
    by_class = {item.reference["answer"]: Path(item.images[0]).name for item in items}
    prompt = items[0].prompt
    answers = {(by_class["airport"], prompt): "The airport.", (by_class["bare land"], prompt): "Bare-Land",
               (by_class["storage tanks"], prompt): "airport"}  # fmt: skip
    report = evaluate("aid-scene", aid_root, tmp_path / "out", ScriptedModel(answers, default="Stream."))
    metrics = report["metrics"]
    assert metrics["n"] == 6 and metrics["accuracy"] == pytest.approx(2 / 6)
    assert metrics["per_class"] == {"airport": 0.5, "bare land": 0.5, "storage tanks": 0.0}
    # "airport" for the storage tanks names a wrong class of the list; "stream" names none of its classes
    assert metrics["off_list"] == {"count": 3, "another_name": 0, "answers": {"stream": 3}}
    assert "3 answers named no class of the list (most often: 'stream' 3); 0 of them" in format_table(
        load_suites()["aid-scene"], report
    )


@pytest.mark.parametrize(
    ("prediction", "answer", "right"),
    [
        ("The airport.", "airport", True),
        ("an Airport", "airport", True),
        ('"storage tanks"', "storage tanks", True),
        ("StorageTanks", "storage tanks", True),
        ("golf-course!", "golf course", True),
        ("parking", "parking lot", False),  # another class of a list (AID "parking", UCM "parking lot")
        ("river", "beach", False),
        ("the river and the beach", "beach", False),  # two classes named: not an answer
        ("lots of houses arranged neatly", "dense residential", False),
    ],
)
def test_scene_answers_match_up_to_case_punctuation_and_a_leading_article(prediction, answer, right):
    assert scene_accuracy([{"prediction": prediction, "answer": answer}])["accuracy"] == float(right)


# ------------------------------------------------------------------------------------------------ ucm-scene


def ucm_layout(root: Path, splits: dict[int, str]) -> None:
    """UCM-Captions' layout: dataset.json and imgs/N.jpg, image N of class sorted(UCM)[(N-1)//100]."""
    entries = [{"filename": f"{n}.jpg", "imgid": n - 1, "split": split, "sentences": [{"raw": "x"}]}
               for n, split in splits.items()]  # fmt: skip
    (root / "ucm_captions").mkdir(parents=True)
    (root / "ucm_captions" / "dataset.json").write_text(json.dumps({"images": entries, "dataset": "UCM"}))
    for n in splits:
        image(root / "ucm_captions" / "imgs" / f"{n}.jpg", (32, 32))


def test_ucm_scene_labels_the_captions_val_images_with_uc_merced_class_names(tmp_path: Path):
    ucm_layout(tmp_path, {1: "val", 2: "train", 100: "val", 101: "val", 1550: "val", 2100: "val", 2101: "val"})
    items, rejects = read_items(load_suites()["ucm-scene"], tmp_path)
    labels = {item.images[0]: item.reference["answer"] for item in items}
    assert labels == {"ucm_captions/imgs/1.jpg": "agricultural", "ucm_captions/imgs/100.jpg": "agricultural",
                      "ucm_captions/imgs/101.jpg": "airplane", "ucm_captions/imgs/1550.jpg": "parking lot",
                      "ucm_captions/imgs/2100.jpg": "tennis court"}  # fmt: skip
    assert [(r.key, r.reason) for r in rejects] == [("2101.jpg", "unknown class")]
    classes = ", ".join(sorted(readable(folder) for folder in UCM_FOLDERS))
    assert "golf course" in classes and {item.prompt for item in items} == {SCENE.format(classes=classes)}


def test_ucm_scene_reads_the_land_use_release_first(tmp_path: Path):
    ucm_layout(tmp_path, {1: "val"})
    for folder in UCM_FOLDERS[:2]:
        for n in range(20):
            image(tmp_path / "UCMerced_LandUse" / "Images" / folder / f"{folder}{n:02d}.tif", (32, 32))
    items, _ = read_items(load_suites()["ucm-scene"], tmp_path)
    assert len(items) == 4 and all(item.images[0].startswith("UCMerced_LandUse/Images/") for item in items)


def test_eval_help_lists_every_suite(capsys):
    from skyeye import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["eval", "--help"])
    listed = capsys.readouterr().out.split("suites (configs/eval/suites.yaml):")[1]
    assert exited.value.code == 0 and [name.strip() for name in listed.split(",")] == list(load_suites())


def test_readable_splits_uc_merced_golfcourse():
    assert readable("golfcourse") == "golf course"


# -------------------------------------------------------------------------------------------- the real data


def test_nwpu_grounding_on_the_shared_data_asks_the_unique_objects_of_100_held_out_images():
    folder = real_data("nwpu_vhr10")
    items, rejects = read_items(load_suites()["nwpu-vhr10-grounding"], folder.parent)
    assert not rejects
    images = {Path(item.images[0]).stem for item in items}
    val = adapter_keys("nwpu_vhr10", folder.parent, "nwpu_vhr10", "val", TRAINING_SPLIT)
    assert len(val) == 100 and images <= val
    # Counted straight from the annotation files: the objects whose class id occurs once in their file.
    expected = Counter()
    for stem in val:
        ids = re.findall(r",\s*(\d+)\s*$", (folder / "ground truth" / f"{stem}.txt").read_text(), re.MULTILINE)
        expected.update(NWPU_CLASSES[int(i) - 1] for i, count in Counter(ids).items() if count == 1)
    assert Counter(item.reference["class"] for item in items) == expected and len(items) > 50


def test_aid_scene_on_the_shared_data_holds_out_a_fifth_of_each_of_its_30_classes():
    folder = real_data("aid_150px", "AID")
    items, rejects = read_items(load_suites()["aid-scene"], folder.parent.parent)
    assert not rejects
    sizes = {readable(d.name): len(list(d.iterdir())) for d in folder.iterdir() if d.is_dir()}
    assert len(sizes) == 30
    counts = Counter(item.reference["answer"] for item in items)
    assert counts == {name: size - round(0.8 * size) for name, size in sizes.items()}


def test_ucm_scene_on_the_shared_data_labels_the_210_val_images_as_their_captions_say():
    folder = real_data("ucm_captions")
    items, rejects = read_items(load_suites()["ucm-scene"], folder.parent)
    assert not rejects and len(items) == 210 and len({item.reference["answer"] for item in items}) == 21
    captions = {e["filename"]: " ".join(s["raw"] for s in e["sentences"])
                for e in json.loads((folder / "dataset.json").read_text())["images"]}  # fmt: skip
    # Classes whose captions name them: the id → class mapping must put those words in nearly all captions.
    words = {"airplane": "plane", "beach": "beach", "tennis court": "tennis", "baseball diamond": "baseball",
             "golf course": "golf", "storage tanks": "tank", "harbor": "boat", "runway": "runway"}  # fmt: skip
    for label, word in words.items():
        texts = [captions[Path(i.images[0]).name].lower() for i in items if i.reference["answer"] == label]
        assert sum(word in text for text in texts) >= 0.8 * len(texts), label
