"""Caption adapters (karpathy, precomp, nwpu_captions): hand-made native files with each format's quirks, then
the real annotation files under ../shared/data (skipped when that folder is absent)."""

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from skyeye.data.build import Builder, image_key
from skyeye.data.recipe import Recipe
from skyeye.data.sources import captions  # noqa: F401  (registers the adapters)
from skyeye.data.sources.base import ADAPTERS, Example, Reject, SourceContext

from conftest import REAL_DATA as DATA
from conftest import real_data


def run(root: Path, folder: str, adapter: str, split: str, **options) -> list[Example | Reject]:
    return list(ADAPTERS[adapter](SourceContext(root, folder, folder, split, options)))


def by_key(items) -> dict:
    keys = [item.key for item in items]
    assert len(keys) == len(set(keys)), "keys must be unique within (source, split)"
    return {item.key: item for item in items}


def reasons(items) -> Counter:
    return Counter(item.reason for item in items if isinstance(item, Reject))


def image(path: Path, size=(12, 9)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 30)).save(path)


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode())


# --- karpathy -------------------------------------------------------------------------------------------------


def sentences(*raws):
    return [{"raw": raw, "tokens": str(raw).split(), "imgid": 0, "sentid": i} for i, raw in enumerate(raws)]


KARPATHY = {
    "dataset": "UCM",
    "images": [
        {"filename": "1.jpg", "imgid": 0, "split": "train", "sentences": sentences("farmland .", " many   trees . ")},
        {"filename": "2.png", "imgid": 1, "split": "restval", "sentences": sentences("a river .", "   ")},
        {"filename": "3.tif", "imgid": 2, "split": "train", "sentences": sentences("gone .", "also gone .")},
        {"filename": "4.jpg", "imgid": 3, "split": "val", "sentences": sentences("a road .")},
        {"filename": "5.jpeg", "imgid": 4, "split": "test", "sentences": sentences("a port .", "ships .")},
    ],
}


@pytest.fixture
def karpathy_root(tmp_path):
    folder = tmp_path / "ucm"
    folder.mkdir()
    (folder / "dataset_ucm.json").write_text(json.dumps(KARPATHY))
    image(folder / "imgs" / "1.jpg", (10, 8))
    image(folder / "imgs" / "2.png", (12, 9))
    image(folder / "imgs" / "4.jpg")
    image(folder / "imgs" / "5.jpeg")
    return tmp_path


def test_karpathy_reads_train_with_restval_and_rejects_each_bad_caption(karpathy_root):
    items = run(karpathy_root, "ucm", "karpathy", "train")
    assert [i.key for i in items] == ["1.jpg#0", "1.jpg#1", "2.png#0", "2.png#1", "3.tif#0", "3.tif#1"]
    got = by_key(items)
    first = got["1.jpg#0"]
    assert isinstance(first, Example)
    assert (first.source, first.split, first.kind) == ("ucm", "train", "caption")
    assert first.images == ["ucm/imgs/1.jpg"] and first.image_size == (10, 8)
    assert got["1.jpg#1"].fields == {"caption": "many trees ."}  # whitespace normalised
    assert got["2.png#0"].image_size == (12, 9) and got["2.png#0"].meta == {"imgid": 1, "native_split": "restval"}
    assert (got["2.png#1"].reason, "'   '" in got["2.png#1"].detail) == ("empty text", True)
    assert [(got[k].reason, got[k].detail) for k in ("3.tif#0", "3.tif#1")] == [("missing image", "ucm/imgs/3.tif")] * 2
    val = run(karpathy_root, "ucm", "karpathy", "val")
    assert [(i.key, i.fields["caption"]) for i in val] == [("4.jpg#0", "a road .")]
    assert [i.images for i in run(karpathy_root, "ucm", "karpathy", "test")] == [["ucm/imgs/5.jpeg"]] * 2


def test_karpathy_options_and_errors(karpathy_root):
    folder = karpathy_root / "ucm"
    (folder / "imgs").rename(folder / "pictures")
    items = run(karpathy_root, "ucm", "karpathy", "val", images="pictures")
    assert [i.images for i in items] == [["ucm/pictures/4.jpg"]]
    assert reasons(run(karpathy_root, "ucm", "karpathy", "val")) == {"missing image": 1}
    with pytest.raises(ValueError, match=r"no image is in split 'dev'.*\['test', 'train', 'val'\]"):
        run(karpathy_root, "ucm", "karpathy", "dev")
    with pytest.raises(ValueError, match="split 'restval'"):  # restval is read as train, never on its own
        run(karpathy_root, "ucm", "karpathy", "restval")
    (folder / "dataset_other.json").write_text(json.dumps(KARPATHY))
    with pytest.raises(ValueError, match="exactly one dataset.*dataset_other.json, dataset_ucm.json"):
        run(karpathy_root, "ucm", "karpathy", "val")
    assert len(run(karpathy_root, "ucm", "karpathy", "val", annotations="dataset_other.json", images="pictures")) == 1
    with pytest.raises(ValueError, match="nope.json: annotation file not found"):
        run(karpathy_root, "ucm", "karpathy", "val", annotations="nope.json")


def test_karpathy_duplicate_file_name_is_rejected_not_given_a_colliding_key(tmp_path):
    data = {"images": [{"filename": "a.jpg", "split": "train", "sentences": sentences("one .", "two .")},
                       {"filename": "a.jpg", "split": "train", "sentences": sentences("three .")}]}  # fmt: skip
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "dataset.json").write_text(json.dumps(data))
    image(tmp_path / "set" / "imgs" / "a.jpg")
    items = run(tmp_path, "set", "karpathy", "train")
    assert [(i.key, type(i).__name__) for i in items] == [("a.jpg#0", "Example"), ("a.jpg#1", "Example"),
                                                           ("a.jpg#0", "Reject")]  # fmt: skip
    assert items[2].reason == "duplicate image entry"


def test_build_groups_an_images_captions_into_one_conversation(karpathy_root, tmp_path):
    source = {"name": "ucm", "adapter": "karpathy", "path": "ucm", "splits": ["train"]}
    recipe = Recipe.from_dict({"name": "t", "sources": [{**source, "tasks": ["caption", "conversation"]}]}, "test")
    stats = Builder(recipe, karpathy_root, tmp_path / "out", progress=False).run()
    tasks = stats["sources"]["ucm"]["tasks"]
    assert tasks["caption"] == {"read": 6, "written": 3, "sampled_out": 0,
                                "rejected": {"missing image": 2, "empty text": 1},
                                "written_by_split": {"train": 3}}  # fmt: skip
    # 1.jpg has two captions: one conversation; 2.png's only usable caption is too little for one.
    assert tasks["conversation"]["written"] == 1
    conversations = [json.loads(line) for p in sorted((tmp_path / "out" / "shards").iterdir())
                     for line in p.read_text().splitlines() if '"conversation"' in line]  # fmt: skip
    assert [c["id"] for c in conversations] == ["ucm/train/conversation/1.jpg"]


def test_build_counts_one_conversation_unit_per_image_not_per_caption(karpathy_root, tmp_path):
    source = {"name": "ucm", "adapter": "karpathy", "path": "ucm", "splits": ["train"]}
    recipe = Recipe.from_dict({"name": "t", "sources": [{**source, "tasks": ["caption", "conversation"]}]}, "test")
    stats = Builder(recipe, karpathy_root, tmp_path / "out", progress=False).run()
    train = [e for e in KARPATHY["images"] if e["split"] in ("train", "restval")]
    missing = [e["filename"] for e in train if not (karpathy_root / "ucm" / "imgs" / e["filename"]).exists()]
    conversation = stats["sources"]["ucm"]["tasks"]["conversation"]
    assert missing and conversation["read"] == len(train)  # an image not on disk is one unit, not one per caption
    assert conversation["rejected"]["missing image"] == len(missing)
    assert conversation["written"] + sum(conversation["rejected"].values()) == conversation["read"]
    lines = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    per_task = Counter(task for line in lines for task in line["tasks"])
    tasks = stats["sources"]["ucm"]["tasks"]
    assert per_task == {task: sum(count["rejected"].values()) for task, count in tasks.items()}
    assert sorted(image_key(line["key"]) for line in lines if "conversation" in line["tasks"]) == sorted(
        e["filename"] for e in train if e["filename"] != "1.jpg"
    )


# --- precomp --------------------------------------------------------------------------------------------------


@pytest.fixture
def precomp_root(tmp_path):
    folder = tmp_path / "rsicd"
    # train: one file-name line per image, five caption lines each (RSICD/RSITMD train); c.jpg is not on disk
    write_lines(folder / "train_filename.txt", ["a.jpg", "b.jpg", "c.jpg"])
    write_lines(folder / "train_caps.txt", [f"{n} caption {i}" for n in "abc" for i in range(5)][:6] + [""]
                + [f"b caption {i}" for i in range(2, 5)] + [f"c caption {i}" for i in range(5)])  # fmt: skip
    # test: one file-name line per caption (RSICD/RSITMD test), with Windows line ends
    write_lines(folder / "test_filename.txt", ["b.jpg"] * 3 + ["a.jpg"] * 2, newline="\r\n")
    write_lines(folder / "test_caps.txt", ["b one", "b two", "b three", "a one", "a two"], newline="\r\n")
    # val: the counts fit neither layout
    write_lines(folder / "val_filename.txt", ["a.jpg", "b.jpg", "c.jpg"])
    write_lines(folder / "val_caps.txt", [f"v{i}" for i in range(7)])
    image(folder / "imgs" / "a.jpg", (16, 10))
    image(folder / "imgs" / "b.jpg", (20, 10))
    return tmp_path


def test_precomp_one_name_line_per_image(precomp_root):
    items = run(precomp_root, "rsicd", "precomp", "train")
    assert [i.key for i in items] == [f"{n}.jpg#{i}" for n in "abc" for i in range(5)]
    got = by_key(items)
    assert got["a.jpg#4"].fields["caption"] == "a caption 4" and got["a.jpg#4"].image_size == (16, 10)
    assert got["b.jpg#0"].fields["caption"] == "b caption 0" and got["b.jpg#0"].meta == {"line": 6}
    assert got["b.jpg#1"].reason == "empty text" and got["b.jpg#1"].detail.startswith("train_caps.txt:7: ")
    assert got["b.jpg#4"].images == ["rsicd/imgs/b.jpg"] and got["b.jpg#4"].image_size == (20, 10)
    assert reasons(items) == {"missing image": 5, "empty text": 1}
    assert got["c.jpg#0"].detail == "train_caps.txt:11: rsicd/imgs/c.jpg"
    assert [i.key for i in run(precomp_root, "rsicd", "precomp", "train", captions_per_image=5)] == list(got)


def test_precomp_one_name_line_per_caption(precomp_root):
    items = run(precomp_root, "rsicd", "precomp", "test")
    assert [(i.key, i.fields["caption"], i.images[0]) for i in items] == [
        ("b.jpg#0", "b one", "rsicd/imgs/b.jpg"), ("b.jpg#1", "b two", "rsicd/imgs/b.jpg"),
        ("b.jpg#2", "b three", "rsicd/imgs/b.jpg"), ("a.jpg#0", "a one", "rsicd/imgs/a.jpg"),
        ("a.jpg#1", "a two", "rsicd/imgs/a.jpg"),
    ]  # fmt: skip
    # the same layout named explicitly; a file named again further down keeps counting its captions
    write_lines(precomp_root / "rsicd" / "test_filename.txt", ["a.jpg", "b.jpg", "a.jpg", "a.jpg", "b.jpg"])
    items = run(precomp_root, "rsicd", "precomp", "test", captions_per_image=1)
    assert [i.key for i in items] == ["a.jpg#0", "b.jpg#0", "a.jpg#1", "a.jpg#2", "b.jpg#1"]


def test_precomp_count_mismatch_rejects_every_caption_naming_both_counts(precomp_root):
    items = run(precomp_root, "rsicd", "precomp", "val")
    assert [i.key for i in items] == [f"val_caps.txt:{n}" for n in range(1, 8)]
    assert reasons(items) == {"caption/filename count mismatch (7 vs 3)": 7}
    assert "val_caps.txt has 7 lines and val_filename.txt 3" in items[0].detail
    # an explicit captions_per_image that the counts contradict is a mismatch too
    assert reasons(run(precomp_root, "rsicd", "precomp", "test", captions_per_image=5)) == {
        "caption/filename count mismatch (5 vs 5)": 5
    }


def test_precomp_unknown_split_names_the_missing_file(precomp_root):
    with pytest.raises(ValueError, match=r"split 'dev'.*dev_filename.txt not found"):
        run(precomp_root, "rsicd", "precomp", "dev")
    (precomp_root / "rsicd" / "test_caps.txt").unlink()
    with pytest.raises(ValueError, match="test_caps.txt not found"):
        run(precomp_root, "rsicd", "precomp", "test")


# --- nwpu_captions --------------------------------------------------------------------------------------------


def nwpu_entry(filename, imgid, split, raws):
    entry = {"filename": filename, "imgid": imgid, "split": split}
    for n, raw in enumerate(raws):
        suffix = f"_{n}" if n else ""
        entry[f"raw{suffix}"] = raw
        entry[f"sentids{suffix}"] = imgid * 5 + n
    return entry


NWPU = {
    "airplane": [
        nwpu_entry("airplane_001.jpg", 0, "train", [f"plane {i} ." for i in range(5)]),
        nwpu_entry("airplane_002.jpg", 1, "test", [f"test plane {i} ." for i in range(5)]),
    ],
    "baseball_diamond": [
        nwpu_entry("baseball_diamond_001.jpg", 2, "train", ["a", "b", "c", "", "e"]),
        nwpu_entry("baseball_diamond_002.jpg", 3, "train", [f"gone {i}" for i in range(5)]),
        nwpu_entry("baseball_diamond_003.jpg", 4, "val", [f"val {i}" for i in range(5)]),
    ],
}


@pytest.fixture
def nwpu_root(tmp_path):
    folder = tmp_path / "NWPU-Captions"
    folder.mkdir()
    (folder / "dataset_nwpu.json").write_text(json.dumps(NWPU))
    for name in ("airplane/airplane_001.jpg", "airplane/airplane_002.jpg", "baseball_diamond/baseball_diamond_001.jpg",
                 "baseball_diamond/baseball_diamond_003.jpg"):  # fmt: skip
        image(folder / "NWPU-RESISC45" / name, (256, 256))
    return tmp_path


def test_nwpu_reads_raw_to_raw_4_per_class(nwpu_root):
    items = run(nwpu_root, "NWPU-Captions", "nwpu_captions", "train")
    images = ["airplane/airplane_001.jpg", "baseball_diamond/baseball_diamond_001.jpg",
              "baseball_diamond/baseball_diamond_002.jpg"]  # fmt: skip
    assert [i.key for i in items] == [f"{name}#{n}" for name in images for n in range(5)]
    got = by_key(items)
    assert [got[f"airplane/airplane_001.jpg#{n}"].fields["caption"] for n in range(5)] == [
        f"plane {i} ." for i in range(5)
    ]
    first = got["airplane/airplane_001.jpg#0"]
    assert first.images == ["NWPU-Captions/NWPU-RESISC45/airplane/airplane_001.jpg"]
    assert first.image_size == (256, 256) and first.meta == {"label": "airplane", "imgid": 0}
    assert got["baseball_diamond/baseball_diamond_001.jpg#3"].reason == "empty text"
    assert reasons(items) == {"empty text": 1, "missing image": 5}
    assert len(run(nwpu_root, "NWPU-Captions", "nwpu_captions", "test")) == 5
    with pytest.raises(ValueError, match="no image is in split 'dev'"):
        run(nwpu_root, "NWPU-Captions", "nwpu_captions", "dev")


def test_nwpu_image_folder_defaults_to_imgs_without_resisc45(nwpu_root):
    folder = nwpu_root / "NWPU-Captions"
    (folder / "NWPU-RESISC45").rename(folder / "imgs")
    val = run(nwpu_root, "NWPU-Captions", "nwpu_captions", "val")
    assert val[0].images == ["NWPU-Captions/imgs/baseball_diamond/baseball_diamond_003.jpg"]
    (folder / "imgs").rename(folder / "RESISC")
    val = run(nwpu_root, "NWPU-Captions", "nwpu_captions", "val", images="RESISC")
    assert [type(i) for i in val] == [Example] * 5


# --- real annotation files ------------------------------------------------------------------------------------


def karpathy_truth(path: Path, split: str) -> list[tuple[str, int]]:
    """(file name, caption count) per image of a split, read straight from the JSON."""
    entries = json.loads(path.read_text())["images"]
    return [(e["filename"], len(e["sentences"])) for e in entries if e["split"].replace("restval", "train") == split]


@pytest.mark.parametrize("split", ["train", "val"])
def test_real_ucm_captions_all_written(split):
    truth = karpathy_truth(real_data("ucm_captions", "dataset.json"), split)
    assert len(truth) == {"train": 1680, "val": 210}[split] and {n for _, n in truth} == {5}
    items = run(DATA, "ucm_captions", "karpathy", split)
    assert all(isinstance(i, Example) for i in items)
    assert [i.key for i in items] == [f"{name}#{n}" for name, count in truth for n in range(count)]
    assert all(i.images == [f"ucm_captions/imgs/{i.key.split('#')[0]}"] for i in items)
    assert all(i.images[0].endswith(".jpg") and i.image_size and i.fields["caption"] for i in items)
    with Image.open(DATA / items[-1].images[0]) as im:
        assert items[-1].image_size == im.size


def test_real_sydney_captions_counted_with_missing_images():
    path = real_data("formats", "sydney_captions", "dataset.json")
    on_disk = {p.name for p in (path.parent / "imgs").iterdir()}
    for split, images in (("train", 497), ("val", 58), ("test", 58)):
        truth = karpathy_truth(path, split)
        assert len(truth) == images
        items = run(DATA, "formats/sydney_captions", "karpathy", split)
        written = [i for i in items if isinstance(i, Example)]
        assert len(items) == sum(n for _, n in truth)
        assert len(written) == sum(n for name, n in truth if name in on_disk)
        assert reasons(items) == ({"missing image": len(items) - len(written)} if len(items) > len(written) else {})
        assert all(i.image_size == (500, 500) for i in written)
    assert len([i for i in run(DATA, "formats/sydney_captions", "karpathy", "train") if isinstance(i, Example)]) == 45


def precomp_truth(folder: Path, split: str) -> tuple[list[str], list[str]]:
    names = (folder / f"{split}_filename.txt").read_text().splitlines()
    caps = (folder / f"{split}_caps.txt").read_text().splitlines()
    return names, caps


def test_real_rsicd_precomp_both_line_layouts():
    folder = real_data("formats", "rsicd")
    on_disk = {p.name for p in (folder / "imgs").iterdir()}
    names, caps = precomp_truth(folder, "train")
    assert (len(names), len(caps)) == (9828, 5 * 9828)  # one name line per image
    items = run(DATA, "formats/rsicd", "precomp", "train")
    written = [i for i in items if isinstance(i, Example)]
    assert len(items) == len(caps) and len(written) == 5 * len(on_disk & set(names)) == 55
    assert reasons(items) == {"missing image": len(caps) - 55}
    first = names.index("00001.jpg")
    assert [(i.key, i.fields["caption"]) for i in written[:5]] == [
        (f"00001.jpg#{n}", " ".join(caps[5 * first + n].split())) for n in range(5)
    ]
    names, caps = precomp_truth(folder, "test")
    assert len(names) == len(caps) == 5465 and len(set(names)) == 1093  # one name line per caption
    items = run(DATA, "formats/rsicd", "precomp", "test")
    assert len(items) == 5465 and reasons(items) == {"missing image": 5465}
    assert [i.key for i in items[:6]] == [f"{names[0]}#{n}" for n in range(5)] + [f"{names[5]}#0"]
    assert len({i.key.split("#")[0] for i in items}) == 1093


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_rsitmd_has_no_images_so_every_caption_is_rejected(split):
    names, caps = precomp_truth(real_data("formats", "rsitmd"), split)
    items = run(DATA, "formats/rsitmd", "precomp", split)
    assert len(items) == len(caps) == {"train": 21455, "test": 2260}[split]
    assert reasons(items) == {"missing image": len(caps)}
    assert len({i.key.split("#")[0] for i in items}) == len(set(names)) == {"train": 4291, "test": 452}[split]
