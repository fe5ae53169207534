"""Synthetic scenes: determinism, tight boxes, captions that match the objects, and a build through them."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from skyeye.boxes import find_boxes
from skyeye.data import commands
from skyeye.data.shards import iter_records
from skyeye.data.synth import CLASSES, GAP, MAX_PER_CLASS, NUMBER_WORDS, draw_scene, render_scene, synth_examples

SEEDS = range(24)


@pytest.fixture(scope="module")
def scenes():
    return [draw_scene(seed) for seed in SEEDS]


def test_same_seed_same_scene_and_different_seed_different_scene():
    image, objects, captions = render_scene(7)
    again, objects_again, captions_again = render_scene(7)
    assert isinstance(image, Image.Image) and image.size == (256, 256) and image.mode == "RGB"
    assert image.tobytes() == again.tobytes()
    assert objects == objects_again and captions == captions_again
    other, other_objects, _ = render_scene(8)
    assert other.tobytes() != image.tobytes() and other_objects != objects


def test_size_scales_the_scene():
    image, objects, _ = render_scene(3, size=128)
    assert image.size == (128, 128)
    assert all(0 <= o["box"][0] < o["box"][2] <= 128 and 0 <= o["box"][1] < o["box"][3] <= 128 for o in objects)


def test_boxes_inside_image_apart_and_counts_vary(scenes):
    per_class = {name: Counter() for name in CLASSES}
    for scene in scenes:
        counts = Counter(o["name"] for o in scene.objects)
        for name in CLASSES:
            per_class[name][counts[name]] += 1
        boxes = [o["box"] for o in scene.objects]
        for o in scene.objects:
            x1, y1, x2, y2 = o["box"]
            assert o["name"] in CLASSES
            assert all(float(v).is_integer() for v in o["box"])
            assert 0 <= x1 < x2 <= scene.size and 0 <= y1 < y2 <= scene.size
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:  # at least GAP pixels apart along one axis
                assert a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]
    assert sum(not s.objects for s in scenes) <= 1
    assert all(max(histogram) <= MAX_PER_CLASS for histogram in per_class.values())
    for name in ("building", "vehicle", "tree", "storage tank"):  # absent in some scenes, several in others
        assert per_class[name][0] > 0 and max(per_class[name]) >= 2, (name, per_class[name])


def check_tight(scene) -> None:
    """Each box is the bounding box of its object's pixels, and the 1-px ring around it is background."""
    changed = (scene.image != scene.background).any(axis=2)
    assert not changed[scene.mask == 0].any()  # objects only change their own pixels
    for index, obj in enumerate(scene.objects, start=1):
        x1, y1, x2, y2 = (int(v) for v in obj["box"])
        drawn = scene.mask == index
        rows, cols = np.flatnonzero(drawn.any(1)), np.flatnonzero(drawn.any(0))
        assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == (x1, y1, x2, y2), obj
        inside = changed[y1:y2, x1:x2]
        # the first and last row and column of the box show the object, the ring around it the background
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), obj
        ring = np.zeros_like(drawn)
        ring[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = True
        ring[y1:y2, x1:x2] = False
        assert not changed[ring].any() and not (scene.mask[ring] > 0).any(), obj


def check_water(scene) -> None:
    """Ships lie on water only, every other object off water."""
    bluish = scene.background[..., 2].astype(int) - scene.background[..., 0] > 25  # water; roads and land are not
    for index, obj in enumerate(scene.objects, start=1):
        under = bluish[scene.mask == index]
        assert under.all() if obj["name"] == "ship" else not under.any(), obj


_MENTION = re.compile(r"\b(\w+) (" + "|".join(sorted(CLASSES, key=len, reverse=True)) + r")(s?)\b")


def check_captions(scene) -> int:
    """Captions name only classes in the scene, each with its count in words; returns the number of mentions."""
    counts = Counter(o["name"] for o in scene.objects)
    captions = scene.captions
    assert 2 <= len(captions) <= 5 and len(set(captions)) == len(captions), captions
    mentioned = 0
    for caption in captions:
        assert isinstance(caption, str) and caption.endswith(".") and caption == " ".join(caption.split()), caption
        for match in _MENTION.finditer(caption):
            word, name, is_plural = match[1], match[2], bool(match[3])
            mentioned += 1
            n = counts[name]
            assert n > 0, (caption, counts)
            if n == 1:
                assert word in ("a", "an", "one") and not is_plural, (caption, counts)
            else:
                assert word == NUMBER_WORDS[n] and is_plural, (caption, counts)
        bare = _MENTION.sub("", caption)  # no class named without a count in front of it
        assert not any(re.search(rf"\b{name}", bare) for name in CLASSES), caption
    return mentioned


def test_boxes_are_tight_on_the_mask_and_in_the_pixels(scenes):
    for scene in scenes:
        check_tight(scene)
    checked = Counter(o["name"] for scene in scenes for o in scene.objects)
    assert {"building", "vehicle", "storage tank", "tree", "plane", "ship"} <= set(checked), checked


def test_ships_sit_on_water_and_nothing_else_does(scenes):
    for scene in scenes:
        check_water(scene)


def test_captions_name_only_present_classes_with_their_counts(scenes):
    assert sum(check_captions(scene) for scene in scenes) > len(scenes)


def test_synth_examples_write_images_under_root(tmp_path):
    out = tmp_path / "synthetic"
    examples = list(synth_examples(3, out=out, root=tmp_path, seed=5, size=128, split="val"))
    assert [e.key for e in examples] == ["000000", "000001", "000002"]
    for i, example in enumerate(examples):
        assert example.source == "synthetic" and example.split == "val" and example.kind == "regions"
        assert example.images == [f"synthetic/images/val-{i:06d}.png"]
        assert example.image_size == (128, 128) and example.meta["seed"] == 5 + i
        with Image.open(tmp_path / example.images[0]) as image:
            assert image.size == (128, 128)
            _, objects, captions = render_scene(5 + i, 128)
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(render_scene(5 + i, 128)[0]))
        assert example.fields == {"objects": objects, "captions": captions}


def test_build_gives_every_task_and_accounts_for_every_unit(tmp_path):
    stats = commands.synth(n=6, out=tmp_path, progress=False)
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    tasks = stats["sources"]["synthetic"]["tasks"]
    assert set(tasks) == set(commands.SYNTH_TASKS)
    for task, count in tasks.items():
        assert count["read"] == 6, task
        assert count["written"] + sum(count["rejected"].values()) + count["sampled_out"] == count["read"], task
    records = list(iter_records(tmp_path))
    assert {r.task for r in records} == set(commands.SYNTH_TASKS)
    for record in records:
        assert (tmp_path / record.images[0]).is_file()
    grounding = [r for r in records if r.task == "grounding"]
    assert grounding
    cell = 256 / 100
    for record in grounding:
        (found,) = find_boxes(record.turns[0]["assistant"], *record.image_size)
        (pixels,) = record.meta["boxes"]
        assert all(0 <= p - f < cell + 1e-9 for p, f in zip(pixels, found.pixels, strict=True)), (pixels, found)


def test_synth_into_a_folder_holding_records_refuses_or_replaces(tmp_path, capsys):
    from skyeye.cli import main

    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--size", "64", "--no-progress"]
    assert main([*args, "--n", "4", "--splits", "train", "val"]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    capsys.readouterr()
    assert main([*args, "--n", "2"]) != 0
    error = capsys.readouterr().err
    assert str(out) in error and "--overwrite" in error and len(error.strip().splitlines()) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == before, "a refusal changes nothing"

    assert main([*args, "--n", "2", "--overwrite"]) == 0
    records = list(iter_records(out))
    assert {r.split for r in records} == {"train"} and {r.meta["seed"] for r in records} == {0, 1}
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted({r.images[0].split("/")[-1] for r in records})
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records_written"] == len(records)
