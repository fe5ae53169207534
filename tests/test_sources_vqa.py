"""VQA adapters (rsvqa, rsivqa, floodnet_vqa) on hand-made fixtures with each format's quirks, and on real files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from skyeye.data.build import Builder
from skyeye.data.recipe import Recipe
from skyeye.data.sources import ADAPTERS
from skyeye.data.sources import vqa as vqa_sources
from skyeye.data.sources.base import Example, Reject, SourceContext

from conftest import REAL_DATA as DATA
from conftest import real_data


def _read(adapter: str, root: Path, folder: str, split: str = "train", **options) -> list[Example | Reject]:
    return list(ADAPTERS[adapter](SourceContext(root, folder, adapter, split, options)))


def _image(path: Path, size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 30)).save(path)


def _reasons(items) -> Counter:
    return Counter(item.reason for item in items if isinstance(item, Reject))


def _examples(items) -> dict[str, Example]:
    return {item.key: item for item in items if isinstance(item, Example)}


def test_adapters_are_registered():
    assert {"rsvqa", "rsivqa", "floodnet_vqa"} <= set(ADAPTERS)
    assert ADAPTERS["rsvqa"] is vqa_sources.rsvqa


# ------------------------------------------------------------------------------------------------ RSVQA


def _rsvqa_split(folder: Path, prefix: str, split: str, questions: list, answers: list, images: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for part, entries in (("questions", questions), ("answers", answers), ("images", images)):
        (folder / f"{prefix}_split_{split}_{part}.json").write_text(json.dumps({part: entries}))


def _question(ident, img_id, kind, text, answer_id, active=True):
    return {"id": ident, "img_id": img_id, "type": kind, "question": text, "answers_ids": [answer_id],
            "active": active, "date_added": 1.5}  # fmt: skip


def _answer(ident, question_id, text, active=True):
    return {"id": ident, "question_id": question_id, "answer": text, "active": active, "people_id": 0}


@pytest.fixture
def rsvqa_hr(tmp_path) -> Path:
    """A tiny RSVQA-HR: ids are list positions; each split's files hold the other split's entries as
    inactive placeholders; image 7 is missing on disk."""
    folder = tmp_path / "RSVQA_HR"
    for ident in (0, 1, 2):
        _image(folder / "Data" / f"{ident}.tif", (16, 16))
    train_q = [
        _question(0, 0, "presence", "Is there a road?", 0),
        {"id": 1, "active": False},  # belongs to test_phili: a placeholder without text
        _question(2, 1, "count", "How many buildings are there?", 2),
        _question(3, 7, "comp", "Are there more roads than buildings?", 3),  # image 7 is not on disk
        _question(4, 1, "area", "What is the area covered by commercial buildings?", 4),
        _question(5, 0, "presence", "Is there a residential building?", 5),
        _question(6, 1, "presence", "Is there a water area?", 6),  # its answer is inactive
        _question(7, 0, "presence", "  ", 7),  # empty question text
    ]
    train_a = [_answer(0, 0, "yes"), {"id": 1, "active": False}, _answer(2, 2, "12"), _answer(3, 3, "no"),
               _answer(4, 4, "0m2"), _answer(5, 5, "no"), _answer(6, 6, "yes", active=False),
               _answer(7, 7, "yes")]  # fmt: skip
    images = [{"id": i, "questions_ids": [], "active": True, "original_name": f"tile_{i}.tif"} for i in range(3)]
    _rsvqa_split(folder, "USGS", "train", train_q, train_a, images)
    phili_q = [{"id": i, "active": False} for i in range(8)]
    phili_q[1] = _question(1, 2, "presence", "Is there a parking lot?", 1)
    phili_a = [{"id": i, "active": False} for i in range(8)]
    phili_a[1] = _answer(1, 1, "yes")
    _rsvqa_split(folder, "USGS", "test_phili", phili_q, phili_a, images)
    return tmp_path


def test_rsvqa_every_question_becomes_one_example_or_reject(rsvqa_hr):
    items = _read("rsvqa", rsvqa_hr, "RSVQA_HR")
    assert [item.key for item in items] == [str(i) for i in range(8)]
    assert _reasons(items) == {"inactive question": 1, "missing image": 1, "inactive answer": 1, "empty text": 1}
    examples = _examples(items)
    assert sorted(examples) == ["0", "2", "4", "5"]
    count = examples["2"]
    assert count.kind == "vqa" and count.images == ["RSVQA_HR/Data/1.tif"] and count.image_size == (16, 16)
    assert count.fields == {"question": "How many buildings are there?", "answer": "12", "question_type": "count"}
    assert count.meta == {"question_id": 2, "image_id": 1, "answer_id": 2}
    assert examples["4"].fields["answer"] == "0m2"  # raw answer kept
    missing = next(item for item in items if isinstance(item, Reject) and item.reason == "missing image")
    assert missing.key == "3" and "7" in missing.detail


def test_rsvqa_test_phili_split_and_placeholders(rsvqa_hr):
    items = _read("rsvqa", rsvqa_hr, "RSVQA_HR", "test_phili")
    assert len(items) == 8 and _reasons(items) == {"inactive question": 7}
    (example,) = _examples(items).values()
    assert example.split == "test_phili" and example.images == ["RSVQA_HR/Data/2.tif"]
    assert example.fields["question_type"] == "presence" and example.fields["answer"] == "yes"


def test_rsvqa_answers_found_by_id_when_not_positional(rsvqa_hr):
    path = rsvqa_hr / "RSVQA_HR" / "USGS_split_train_answers.json"
    answers = json.loads(path.read_text())["answers"]
    path.write_text(json.dumps({"answers": answers[::-1]}))
    examples = _examples(_read("rsvqa", rsvqa_hr, "RSVQA_HR"))
    assert examples["2"].fields["answer"] == "12" and examples["5"].fields["answer"] == "no"


def test_rsvqa_image_size_option_checks_sizes_and_bad_images_are_rejected(rsvqa_hr):
    import io

    (rsvqa_hr / "RSVQA_HR" / "Data" / "1.tif").write_bytes(b"not a tiff")
    buffer = io.BytesIO()
    Image.effect_noise((16, 16), 60).convert("RGB").save(buffer, "TIFF")  # image 0 loses its last half
    (rsvqa_hr / "RSVQA_HR" / "Data" / "0.tif").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    about_bad_images = ["0", "2", "4", "5"]  # the answerable questions about images 0 and 1
    items = _read("rsvqa", rsvqa_hr, "RSVQA_HR")
    assert sorted(i.key for i in items if getattr(i, "reason", "") == "unreadable image") == about_bad_images
    assert any("truncated" in i.detail for i in items if isinstance(i, Reject))
    # A fixed size saves nothing worth a truncated image in training: images are still decoded, and checked.
    items = _read("rsvqa", rsvqa_hr, "RSVQA_HR", image_size=16)
    assert sorted(i.key for i in items if getattr(i, "reason", "") == "unreadable image") == about_bad_images
    assert {e.image_size for e in _examples(items).values()} <= {(16, 16)}
    wrong = _read("rsvqa", rsvqa_hr, "RSVQA_HR", image_size=512)
    assert not _examples(wrong) and _reasons(wrong)["unexpected image size"] == len(_examples(_read(
        "rsvqa", rsvqa_hr, "RSVQA_HR")))  # fmt: skip


def test_rsvqa_prefix_and_image_folder(tmp_path, rsvqa_hr):
    lr = tmp_path / "lr"
    _image(lr / "Images_LR" / "0.tif")
    _rsvqa_split(lr, "LR", "val", [_question(0, 0, "rural_urban", "Is it a rural or an urban area?", 0)],
                 [_answer(0, 0, "rural")], [])  # fmt: skip
    (example,) = _read("rsvqa", tmp_path, "lr", "val")
    assert example.images == ["lr/Images_LR/0.tif"] and example.fields["question_type"] == "rural_urban"
    _rsvqa_split(lr, "OTHER", "val", [], [], [])
    with pytest.raises(ValueError, match="prefix"):
        _read("rsvqa", tmp_path, "lr", "val")
    assert len(_read("rsvqa", tmp_path, "lr", "val", prefix="LR")) == 1
    with pytest.raises(FileNotFoundError, match="LR_split_test_questions.json"):
        _read("rsvqa", tmp_path, "lr", "test", prefix="LR")
    # the images option names the folder; nothing there → every question is a missing image
    items = _read("rsvqa", tmp_path, "lr", "val", prefix="LR", images="elsewhere")
    assert _reasons(items) == {"missing image": 1}


def test_rsvqa_build_accounts_for_every_question(rsvqa_hr, tmp_path):
    recipe = Recipe.from_dict({"name": "t", "sources": [
        {"name": "rsvqa-hr", "adapter": "rsvqa", "path": "RSVQA_HR", "splits": ["train", "test_phili"],
         "tasks": ["vqa"]}]}, "test")  # fmt: skip
    stats = Builder(recipe, rsvqa_hr, tmp_path / "out", progress=False).run()
    counts = stats["sources"]["rsvqa-hr"]["tasks"]["vqa"]
    assert counts["read"] == 16 and counts["written"] == 5
    assert counts["written"] + sum(counts["rejected"].values()) + counts["sampled_out"] == counts["read"]
    assert counts["rejected"]["inactive question"] == 8
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 11 and {r["split"] for r in rejects} == {"train", "test_phili"}


# ----------------------------------------------------------------------------------------------- RSIVQA

RSIVQA_LINES = [
    "1.tif:What is the theme of this picture?farmland",  # 1 scene; 1.tif is 1.jpg on disk
    "1.tif:How many  in the picture?four",  # 2 the release lost the object word
    "2.tif:Does this picture contain cars?yes",  # 3 presence (val image)
    "P0001: how many ships are there in this picture?21",  # 4 bare stem, space after the colon
    "3.tif:Is the ratio 1:2? or not?twenty-two",  # 5 first ':' and last '?'
    "a line without separators",  # 6
    "3.tif:no question mark here",  # 7
    "",  # 8 blank: not a question
    "1.tif:What is the location of the trees in this picture?top left corner ",  # 9 location
    "9.tif:How many cars in the picture?three",  # 10 image listed but not on disk
    "5.tif:What is it?farmland",  # 11 image not in the splits file
    "1.tif:What is it?",  # 12 empty answer
    "3.tif:How many buildings in the picture?about fifty",  # 13
]


@pytest.fixture
def rsivqa_root(tmp_path) -> Path:
    _image(tmp_path / "ucm" / "imgs" / "1.jpg", (10, 12))
    _image(tmp_path / "ucm" / "imgs" / "2.jpg")
    _image(tmp_path / "ucm" / "imgs" / "3.jpg")
    _image(tmp_path / "ucm" / "imgs" / "P0001.png", (20, 20))
    (tmp_path / "ucm" / "imgs" / "notes.txt").write_text("not an image")
    images = [{"filename": name, "split": split, "sentences": []}
              for name, split in (("1.jpg", "train"), ("2.jpg", "val"), ("3.jpg", "train"), ("P0001.png", "train"),
                                  ("9.jpg", "train"))]  # fmt: skip
    (tmp_path / "ucm" / "dataset.json").write_text(json.dumps({"images": images, "dataset": "UCM"}))
    (tmp_path / "rsivqa").mkdir()
    (tmp_path / "rsivqa" / "res.txt").write_text("\n".join(RSIVQA_LINES) + "\n")
    return tmp_path


SPLIT_OPTIONS = {"images": "ucm/imgs", "splits_from": "ucm/dataset.json"}


def test_rsivqa_lines_split_types_and_rejects(rsivqa_root):
    items = _read("rsivqa", rsivqa_root, "rsivqa", **SPLIT_OPTIONS)
    by_key = {item.key: item for item in items}
    assert sorted(by_key, key=lambda k: int(k.rsplit(":", 1)[1])) == [
        f"rsivqa/res.txt:{n}" for n in (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13)
    ]
    assert _reasons(items) == {"missing object word": 1, "unreadable line": 2, "missing image": 1,
                               "image not in splits file": 1, "empty text": 1}  # fmt: skip
    scene = by_key["rsivqa/res.txt:1"]
    assert scene.images == ["ucm/imgs/1.jpg"] and scene.image_size == (10, 12)
    assert scene.fields == {"question": "What is the theme of this picture?", "answer": "farmland",
                            "question_type": "scene"}  # fmt: skip
    assert scene.meta == {"image_ref": "1.tif", "file": "rsivqa/res.txt", "line": 1}
    bare = by_key["rsivqa/res.txt:4"]
    assert bare.images == ["ucm/imgs/P0001.png"] and bare.meta["image_ref"] == "P0001"
    assert bare.fields["question"] == "how many ships are there in this picture?"
    assert bare.fields["answer"] == "21" and bare.fields["question_type"] == "count"
    assert "answer_digits" not in bare.meta
    tricky = by_key["rsivqa/res.txt:5"]
    assert tricky.fields["question"] == "Is the ratio 1:2? or not?" and tricky.fields["answer"] == "twenty-two"
    assert tricky.meta["answer_digits"] == "22" and tricky.fields["question_type"] == "other"
    location = by_key["rsivqa/res.txt:9"]
    assert location.fields["answer"] == "top left corner" and location.fields["question_type"] == "location"
    assert "answer_digits" not in by_key["rsivqa/res.txt:13"].meta
    unreadable = by_key["rsivqa/res.txt:6"]
    assert unreadable.reason == "unreadable line" and unreadable.detail == "a line without separators"
    assert by_key["rsivqa/res.txt:2"].reason == "missing object word"


def test_rsivqa_splits_account_for_every_line(rsivqa_root):
    train = _read("rsivqa", rsivqa_root, "rsivqa", **SPLIT_OPTIONS)
    val = _read("rsivqa", rsivqa_root, "rsivqa", "val", **SPLIT_OPTIONS)
    (presence,) = val
    assert presence.split == "val" and presence.fields["question_type"] == "presence"
    keys = [item.key for item in train + val]
    assert len(keys) == len(set(keys)) == sum(1 for line in RSIVQA_LINES if line.strip())


def test_rsivqa_options(rsivqa_root):
    kept = _examples(_read("rsivqa", rsivqa_root, "rsivqa", keep_missing_object=True, **SPLIT_OPTIONS))
    assert kept["rsivqa/res.txt:2"].fields["answer"] == "four"
    assert kept["rsivqa/res.txt:2"].meta["answer_digits"] == "4"
    # without a splits file every line is train, and other splits are an error
    items = _read("rsivqa", rsivqa_root, "rsivqa", images="ucm/imgs")
    assert len(items) == 12 and "image not in splits file" not in _reasons(items)
    assert _reasons(items)["missing image"] == 2  # 9.tif and 5.tif
    with pytest.raises(ValueError, match="splits_from"):
        _read("rsivqa", rsivqa_root, "rsivqa", "val", images="ucm/imgs")
    # no images folder: every readable question is a missing image, unless check_images is off
    items = _read("rsivqa", rsivqa_root, "rsivqa", files=["res.txt"])
    assert _reasons(items)["missing image"] == 8
    unchecked = _examples(_read("rsivqa", rsivqa_root, "rsivqa", check_images=False, images="somewhere"))
    assert len(unchecked) == 8 and unchecked["rsivqa/res.txt:4"].images == ["somewhere/P0001"]
    assert all(example.image_size is None for example in unchecked.values())


def test_rsivqa_extension_and_recursive_and_crlf(tmp_path):
    _image(tmp_path / "imgs" / "a" / "7.jpg")
    _image(tmp_path / "imgs" / "b" / "7.png", (9, 9))
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "x.txt").write_bytes(b"7.tif:Is there a road?yes\r\n7.tif:What is the scene?river\r\n")
    items = _read("rsivqa", tmp_path, "q", images="imgs")
    assert _reasons(items) == {"missing image": 2}  # subfolders are not indexed by default
    items = _read("rsivqa", tmp_path, "q", images="imgs", recursive=True, extension="png")
    assert [item.images for item in items] == [["imgs/b/7.png"]] * 2
    assert [item.fields["answer"] for item in items] == ["yes", "river"]
    assert items[1].fields["question_type"] == "scene"


def test_rsivqa_helpers():
    split = vqa_sources.split_rsivqa_line
    assert split("P0000: how many planes are there in this picture?21") == (
        "P0000", "how many planes are there in this picture?", "21")  # fmt: skip
    assert split("1.tif:What? Really?yes") == ("1.tif", "What? Really?", "yes")
    assert split(":question?answer") is None and split("1.tif question?yes") is None
    digits = vqa_sources.number_digits
    assert [digits(a) for a in ("zero", "four", "fifteen", "thirty", "forty-nine", "twenty two")] == [
        "0", "4", "15", "30", "49", "22"]  # fmt: skip
    assert [digits(a) for a in ("21", "about fifty", "several", "twenty-zero", "no")] == [None] * 5
    kind = vqa_sources.rsivqa_question_type
    assert kind("what is the theme of this picture?", "airport") == "scene"
    assert kind("Does this picture contain trees?", "yes") == "presence"
    assert kind("How many  in the picture?", "zero") == "count"
    assert kind("Where is the river?", "left") == "location"
    assert kind("What color is the roof?", "red") == "other"


# --------------------------------------------------------------------------------------------- FloodNet


def test_floodnet_vqa(tmp_path):
    source = tmp_path / "FloodNet"
    _image(source / "Images" / "Train_Image" / "10165.jpg", (40, 30))
    questions = {
        "0": {"Image_ID": "10165.JPG", "Question": "What is the overall condition of the given image?",
              "Ground_Truth": "non flooded", "Question_Type": "Condition_Recognition"},
        "1": {"Image_ID": "10165.JPG", "Question": "How many buildings are in the image?", "Ground_Truth": 3,
              "Question_Type": "Simple_Counting"},
        "2": {"Image_ID": "10165.JPG", "Question": "Is the entire road flooded?", "Question_Type": "Yes_No"},
        "3": {"Image_ID": "99999.JPG", "Question": "Is the entire road flooded?", "Ground_Truth": "No",
              "Question_Type": "Yes_No"},
    }  # fmt: skip
    (source / "Questions").mkdir()
    (source / "Questions" / "Training Question.json").write_text(json.dumps(questions))
    items = _read("floodnet_vqa", tmp_path, "FloodNet")
    assert [item.key for item in items] == ["0", "1", "2", "3"]
    assert _reasons(items) == {"missing answer": 1, "missing image": 1}
    examples = _examples(items)
    assert examples["0"].images == ["FloodNet/Images/Train_Image/10165.jpg"] and examples["0"].image_size == (40, 30)
    assert examples["0"].fields["question_type"] == "Condition_Recognition"
    assert examples["1"].fields["answer"] == "3" and examples["1"].meta == {"question_id": "1", "image_id": "10165.JPG"}
    # custom layout: paths per split, with {split}
    (source / "qs").mkdir()
    (source / "qs" / "val.json").write_text(json.dumps({"7": questions["0"]}))
    items = _read("floodnet_vqa", tmp_path, "FloodNet", "val", questions="qs/{split}.json",
                  images={"val": "Images/Train_Image"})  # fmt: skip
    assert [item.key for item in items] == ["7"] and isinstance(items[0], Example)
    with pytest.raises(FileNotFoundError, match="Valid Question.json"):
        _read("floodnet_vqa", tmp_path, "FloodNet", "val")


# ------------------------------------------------------------------------------------------- real files


def test_real_rsivqa_ucm_accounts_for_every_line():
    real_data("rsivqa_ucm", "ucm_vqa.txt")
    real_data("ucm_captions", "dataset.json")
    dataset = json.loads((DATA / "ucm_captions" / "dataset.json").read_text())
    split_of = {image["filename"].split(".")[0]: image["split"] for image in dataset["images"]}
    expected: dict[str, Counter] = {"train": Counter(), "val": Counter()}
    lines = 0
    for name, count in (("ucm_vqa.txt", 1890), ("ucm_res.txt", 2540)):
        text = (DATA / "rsivqa_ucm" / name).read_text().splitlines()
        assert len(text) == count
        for line in text:
            lines += 1
            image, _, rest = line.partition(":")
            outcome = "missing object word" if "  " in rest.rpartition("?")[0] else "example"
            expected[split_of[image.split(".")[0]]][outcome] += 1
    options = {"images": "ucm_captions/imgs", "splits_from": "ucm_captions/dataset.json"}
    seen, read = [], {}
    for split in ("train", "val"):
        items = read[split] = _read("rsivqa", DATA, "rsivqa_ucm", split, **options)
        got = Counter("example" if isinstance(item, Example) else item.reason for item in items)
        assert got == expected[split]
        seen += [item.key for item in items]
        for example in _examples(items).values():
            assert example.images[0].startswith("ucm_captions/imgs/") and example.images[0].endswith(".jpg")
            assert example.image_size and example.fields["question_type"] in {"scene", "presence", "count", "location"}
    assert len(seen) == len(set(seen)) == lines == 1890 + 2540
    assert sum(expected[s]["missing object word"] for s in expected) == 276
    first_count = _examples(read["train"])["rsivqa_ucm/ucm_res.txt:4"]
    assert first_count.fields == {"question": "How many trees in the picture?", "answer": "one",
                                  "question_type": "count"}  # fmt: skip
    assert first_count.images == ["ucm_captions/imgs/1.jpg"] and first_count.meta["answer_digits"] == "1"


@pytest.mark.parametrize("part", ["AID", "Sydney", "HRRSD", "DOTA"])
def test_real_rsivqa_formats_read_every_line(part):
    folder = real_data("formats", "rsivqa", part)
    (file,) = folder.glob("*.txt")
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    items = _read("rsivqa", DATA, f"formats/rsivqa/{part}")
    assert len(items) == len(lines) and _reasons(items) == {"missing image": len(lines)}
    unchecked = _read("rsivqa", DATA, f"formats/rsivqa/{part}", check_images=False)
    assert len(unchecked) == len(lines) and all(isinstance(item, Example) for item in unchecked)
    first = unchecked[0]
    assert first.meta["image_ref"] == lines[0].split(":")[0].strip()
    assert first.fields["answer"] == lines[0].rpartition("?")[2]
    types = Counter(item.fields["question_type"] for item in unchecked)
    if part in ("AID", "Sydney"):
        assert types == {"scene": len(lines)}
    else:
        assert set(types) == {"count", "presence"}
