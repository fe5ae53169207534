"""Records, shards, instructions and the build's accounting, on a hand-made adapter."""

import json
import re
from dataclasses import replace

import pytest

from skyeye.boxes import find_boxes, parse_boxes, pixel_to_grid
from skyeye.data.build import Builder
from skyeye.data.commands import recipe_path
from skyeye.data.instructions import ANOTHER_CAPTION, CAPTION, GENERAL, make_record
from skyeye.data.recipe import Recipe, RecipeError, bundled_recipes
from skyeye.data.record import Record, RecordError
from skyeye.data.shards import ShardWriter, iter_records
from skyeye.data.sources import ADAPTERS
from skyeye.data.sources.base import ADAPTER_OPTIONS, Example

from conftest import real_data

OBJECTS = [
    {"name": "plane", "box": [10.0, 20.0, 60.0, 70.0]},
    {"name": "plane", "box": [100.0, 20.0, 150.0, 70.0]},
    {"name": "storage tank", "box": [200.0, 150.0, 240.0, 190.0]},
]


def _regions(key="img1", size=(256, 200), objects=OBJECTS, captions=()):
    return Example("fake", "train", key, "regions", [f"imgs/{key}.png"], size,
                   {"objects": list(objects), "captions": list(captions)})  # fmt: skip


def _record(**changes) -> dict:
    data = {"id": "a/train/caption/1", "source": "a", "split": "train", "task": "caption", "images": ["x.jpg"],
            "image_size": [10, 20], "turns": [{"user": "[caption] hi", "assistant": "a field"}],
            "meta": {}}  # fmt: skip
    return {**data, **changes}


def test_record_round_trip_and_errors_name_the_field():
    record = Record.from_dict(_record())
    assert Record.from_json(record.to_json()) == record
    for changes, field in [({"task": "dance"}, "task"), ({"images": ["/abs.jpg"]}, "images"),
                           ({"image_size": [0, 3]}, "image_size"), ({"turns": []}, "turns"),
                           ({"turns": [{"user": "q", "assistant": " "}]}, "turns[0]")]:  # fmt: skip
        with pytest.raises(RecordError, match=rf"here.*field '{re.escape(field)}'"):
            Record.from_dict(_record(**changes), where="here")
    with pytest.raises(RecordError, match=r"missing field\(s\) \['task'\]"):
        Record.from_dict({k: v for k, v in _record().items() if k != "task"})
    with pytest.raises(RecordError, match="f.jsonl:3: not valid JSON"):
        Record.from_json("{oops", where="f.jsonl:3")


def test_shards_roll_over_and_stream_back_in_order(tmp_path):
    with ShardWriter(tmp_path, records_per_shard=4) as writer:
        for i in range(10):
            writer.write("a-train", Record.from_dict(_record(id=f"a/train/caption/{i}")))
    files = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert files == ["a-train-00000.jsonl", "a-train-00001.jsonl", "a-train-00002.jsonl"]
    assert [r.id for r in iter_records(tmp_path)] == [f"a/train/caption/{i}" for i in range(10)]
    (tmp_path / "shards" / "a-train-00001.jsonl").write_text('{"id": 3}\n')
    with pytest.raises(RecordError, match=r"a-train-00001.jsonl:1: missing field"):
        list(iter_records(tmp_path))


def test_region_records_answer_from_the_annotations():
    example = _regions()
    detection = make_record(example, "detection", seed=1)
    found = find_boxes(detection.turns[0]["assistant"], 256, 200)
    chosen = {f.phrase for f in found}
    assert chosen in ({"planes"}, {"storage tank"})
    expected = [o["box"] for o in OBJECTS if o["name"] in detection.turns[0]["user"] or chosen == {"planes"}
                and o["name"] == "plane"]  # fmt: skip
    assert [f.grid for f in found] == [pixel_to_grid(b, 256, 200) for b in expected]
    assert detection.meta["boxes"] == expected

    grounding = make_record(example, "grounding", seed=1)
    assert "the storage tank" in grounding.turns[0]["user"], "only a class present once can be referred to"
    assert parse_boxes(grounding.turns[0]["assistant"]) == [pixel_to_grid(OBJECTS[2]["box"], 256, 200)]

    for seed in range(30):
        vqa = make_record(example, "vqa", seed=seed).turns[0]
        if "many" in vqa["user"] or "Count" in vqa["user"]:
            assert vqa["assistant"] == ("2" if "planes" in vqa["user"] else "1")
        else:
            present = "plane" in vqa["user"] or "storage tank" in vqa["user"]
            assert vqa["assistant"] == ("yes" if present else "no"), vqa


def test_conversations_mix_tasks_and_are_reproducible():
    example = _regions(captions=["two planes and a tank.", "an apron with planes"])
    conversations = [make_record(example, "conversation", seed=s) for s in range(20)]
    assert all(2 <= len(c.turns) <= 5 for c in conversations)
    identifiers = {t["user"].split("]")[0] + "]" for c in conversations for t in c.turns if t["user"].startswith("[")}
    assert {"[caption]", "[vqa]", "[identify]", "[detection]", "[refer]"} <= identifiers
    assert make_record(example, "conversation", seed=3) == make_record(example, "conversation", seed=3)
    assert len({json.dumps(c.turns) for c in conversations}) > 10


def test_questions_are_asked_with_and_without_the_vqa_identifier_as_chat_users_ask_them():
    from skyeye.data.instructions import UNTAGGED_QUESTIONS

    example = _regions(captions=["two planes and a tank."])
    question = Example("fake", "train", "q1", "vqa", ["imgs/q1.png"], (256, 200),
                       {"question": "Is there a road?", "answer": "no"})  # fmt: skip
    follow_up = {**example.fields, "questions": [{"question": "Are there cars?", "answer": "yes"}]}
    asked = {"vqa": [make_record(question, "vqa", seed=s).turns[0]["user"] for s in range(400)],
             "region vqa": [make_record(example, "vqa", seed=s).turns[0]["user"] for s in range(400)],
             "follow-up": [t["user"] for s in range(1000) for t in make_record(
                 replace(example, fields=follow_up), "conversation", seed=s).turns
                 if "Are there cars?" in t["user"]]}  # fmt: skip
    for kind, users in asked.items():
        untagged = sum(not user.startswith("[vqa] ") for user in users) / len(users)
        assert abs(untagged - UNTAGGED_QUESTIONS) < 0.1, (kind, untagged)
        assert all(user.removeprefix("[vqa] ")[0].isupper() for user in users), kind


def test_a_conversation_opens_with_the_description_that_its_later_turns_refer_to():
    example = _regions(captions=["two planes and a tank.", "an apron with planes"])
    openings = {*GENERAL, *(f"[caption] {question}" for question in CAPTION)}
    for seed in range(40):
        turns = make_record(example, "conversation", seed=seed).turns
        assert turns[0]["user"] in openings and turns[0]["assistant"] == "two planes and a tank.", turns
        assert all(turn["user"] not in ANOTHER_CAPTION for turn in turns[:1])


def test_unusable_examples_are_rejects_with_reasons():
    assert make_record(_regions(objects=[]), "detection").reason == "no objects"
    assert make_record(_regions(size=None), "detection").reason == "no image size"
    crowd = _regions(objects=OBJECTS[:2])
    assert make_record(crowd, "grounding").reason == "no object class present exactly once"
    empty = Example("fake", "train", "k", "caption", ["a.jpg"], (5, 5), {"caption": "   "})
    assert make_record(empty, "caption").reason == "empty text"
    assert make_record(empty, "detection").reason == "task detection not available for caption"


@pytest.fixture
def fake_source(monkeypatch):
    def adapter(ctx):
        for image in range(3):
            for sentence in range(2):
                text = "" if (image, sentence) == (2, 1) else f"caption {image}.{sentence}"
                yield ctx.example(f"{image}#{sentence}", "caption", [f"imgs/{image}.png"], (64, 64), {"caption": text})
        yield ctx.reject("broken.png", "missing image", "imgs/broken.png")

    monkeypatch.setitem(ADAPTERS, "fake", adapter)
    monkeypatch.setitem(ADAPTER_OPTIONS, "fake", frozenset())


def _recipe(**sample):
    return Recipe.from_dict({"name": "t", "sources": [
        {"name": "fake-captions", "adapter": "fake", "path": "fake", "splits": ["train"],
         "tasks": ["caption", "conversation"], "sample": sample, "paper": {"caption": 6}},
        {"name": "absent", "adapter": "fake", "path": "not-here", "splits": ["train"], "tasks": ["caption"]},
    ]}, "test")  # fmt: skip


def test_build_accounts_for_every_item(fake_source, tmp_path):
    (tmp_path / "root" / "fake").mkdir(parents=True)
    stats = Builder(_recipe(), tmp_path / "root", tmp_path / "out", progress=False).run()
    tasks = stats["sources"]["fake-captions"]["tasks"]
    assert tasks["caption"] == {"read": 7, "written": 5, "sampled_out": 0,
                                "rejected": {"empty text": 1, "missing image": 1},
                                "written_by_split": {"train": 5}}  # fmt: skip
    # Conversations group the captions of one image: 3 images + the adapter's reject; image 2 has one usable
    # caption, too little for two turns.
    assert tasks["conversation"] == {
        "read": 4,
        "written": 2,
        "sampled_out": 0,
        "rejected": {"missing image": 1, "too little annotation for a conversation": 1},
        "written_by_split": {"train": 2},
    }
    assert stats["sources"]["absent"]["status"] == "missing"
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == [
        "empty text",
        "missing image",
        "too little annotation for a conversation",
    ]
    records = list(iter_records(tmp_path / "out"))
    assert len(records) == stats["records_written"] == 7
    conversation = next(r for r in records if r.task == "conversation" and r.images == ["imgs/0.png"])
    assert {t["assistant"] for t in conversation.turns} <= {"caption 0.0", "caption 0.1", "caption 0.0. caption 0.1."}
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats


def test_sampling_is_seeded_and_counted(fake_source, tmp_path):
    (tmp_path / "root" / "fake").mkdir(parents=True)
    stats = Builder(_recipe(limit=2), tmp_path / "root", tmp_path / "out", progress=False).run()
    caption = stats["sources"]["fake-captions"]["tasks"]["caption"]
    assert caption["written"] == 2 and caption["sampled_out"] == 4
    assert caption["read"] == caption["written"] + caption["sampled_out"] + sum(caption["rejected"].values())


@pytest.fixture
def fake_questions(monkeypatch):
    def adapter(ctx):  # questions about images 0 and 1 of `fake_source`, and one about an image it lacks
        for image, question, answer in ((0, "Are there trees?", "yes"), (1, "How many cars?", "3"),
                                        (1, "Is it a lake?", "no"), (7, "Any roads?", "yes")):  # fmt: skip
            fields = {"question": question, "answer": answer}
            yield ctx.example(f"q{image}{question}", "vqa", [f"imgs/{image}.png"], (64, 64), fields)
        yield ctx.reject("q-broken", "unreadable line", "line 9")

    monkeypatch.setitem(ADAPTERS, "fake_questions", adapter)
    monkeypatch.setitem(ADAPTER_OPTIONS, "fake_questions", frozenset())


def test_follow_up_questions_about_the_same_image_join_its_conversations(fake_source, fake_questions, tmp_path):
    (tmp_path / "root" / "fake").mkdir(parents=True)
    captions = {"adapter": "fake", "path": "fake", "splits": ["train"], "tasks": ["caption", "conversation"]}
    questions = {"name": "questions", "adapter": "fake_questions", "path": "fake", "splits": ["train"],
                 "tasks": ["vqa"]}  # fmt: skip
    recipe = Recipe.from_dict({"name": "t", "seed": 1, "sources": [
        {"name": "plain", **captions}, {"name": "asked", **captions, "follow_ups": ["questions"]}, questions,
    ]}, "test")  # fmt: skip
    stats = Builder(recipe, tmp_path / "root", tmp_path / "out", progress=False).run()

    counts = {name: stats["sources"][name]["tasks"] for name in ("plain", "asked", "questions")}
    assert counts["asked"] == counts["plain"], "follow-ups change turns, not what is read, written or rejected"
    assert counts["questions"]["vqa"]["read"] == 5 and counts["questions"]["vqa"]["written"] == 4
    asked = {r.images[0]: r.turns for r in iter_records(tmp_path / "out") if r.source == "asked"
             and r.task == "conversation"}  # fmt: skip
    plain = {r.images[0]: r.turns for r in iter_records(tmp_path / "out") if r.source == "plain"
             and r.task == "conversation"}  # fmt: skip
    fake_questions = {"Are there trees?", "How many cars?", "Is it a lake?"}
    assert all(turn["user"].removeprefix("[vqa] ") not in fake_questions for turns in plain.values() for turn in turns)
    follow_ups = {image: {(t["user"].removeprefix("[vqa] "), t["assistant"]) for t in turns
                          if t["user"].removeprefix("[vqa] ") in fake_questions}
                  for image, turns in asked.items()}  # fmt: skip
    assert follow_ups["imgs/0.png"] <= {("Are there trees?", "yes")}
    assert follow_ups["imgs/1.png"] <= {("How many cars?", "3"), ("Is it a lake?", "no")}
    assert any(follow_ups.values()), "seed 1 asks at least one of them"
    openings = [turns[0]["user"].removeprefix("[caption] ") for turns in asked.values()]
    assert all(opening in GENERAL + CAPTION for opening in openings), "the description comes first"


def test_recipe_errors_name_the_field(fake_source):
    base = {"name": "fake", "adapter": "fake", "path": "p", "splits": ["train"], "tasks": ["caption"]}
    for source, message in [({**base, "taks": 1}, r"sources\[0\]: unknown field\(s\) taks"),
                            ({**base, "adapter": "nope"}, "unknown adapter 'nope'"),
                            ({**base, "tasks": ["dance"]}, r"tasks \['dance'\]"),
                            ({**base, "sample": {"fraction": 2}}, "fraction must be in"),
                            ({**base, "follow_ups": ["nope"]}, r"sources\[0\].follow_ups: \['nope'\] must name other"),
                            ({**base, "follow_ups": ["fake"]}, r"follow_ups: \['fake'\] must name other sources"),
                            ]:  # fmt: skip
        with pytest.raises(RecipeError, match=message):
            Recipe.from_dict({"name": "r", "sources": [source]}, "r.yaml")
    with pytest.raises(RecipeError, match="used twice"):
        Recipe.from_dict({"name": "r", "sources": [base, base]}, "r.yaml")
    asking = {**base, "name": "x", "follow_ups": ["fake"]}
    with pytest.raises(RecipeError, match=r"sources\[1\].follow_ups: .* join conversations; add `conversation`"):
        Recipe.from_dict({"name": "r", "sources": [base, asking]}, "r.yaml")
    typo = {**base, "adapter": "karpathy", "options": {"imgaes": "imgs"}}
    with pytest.raises(RecipeError, match=r"sources\[0\].options \(karpathy\): unknown field\(s\) imgaes; known: "):
        Recipe.from_dict({"name": "r", "sources": [typo]}, "r.yaml")


@pytest.mark.parametrize("name", bundled_recipes())
def test_bundled_recipes_load(name):
    recipe = Recipe.from_yaml(recipe_path(name))
    assert recipe.name == name and len({s.name for s in recipe.sources}) == len(recipe.sources)


def test_shared_data_build_accounts_for_every_native_item(tmp_path):
    root = real_data()
    stats = Builder(Recipe.from_yaml(recipe_path("shared-data")), root, tmp_path, progress=False).run()
    ucm = json.loads((root / "ucm_captions" / "dataset.json").read_text())["images"]
    caption = stats["sources"]["ucm-captions"]["tasks"]["caption"]
    assert caption["written_by_split"] == {
        split: sum(len(i["sentences"]) for i in ucm if i["split"] == split) for split in ("train", "val")
    }
    for source in stats["sources"].values():
        for count in source["tasks"].values():
            assert count["written"] + sum(count["rejected"].values()) + count["sampled_out"] == count["read"]
    rejects = sum(1 for _ in (tmp_path / "rejects.jsonl").open())
    per_task_rejects = sum(sum(c["rejected"].values()) for s in stats["sources"].values() for c in s["tasks"].values())
    assert 0 < rejects <= per_task_rejects
    assert sum(1 for _ in iter_records(tmp_path)) == stats["records_written"]


def _cut(path, fmt: str) -> None:
    """A real image of `fmt` with the second half of its bytes gone: the header still reads, the pixels do not."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 60).convert("RGB").save(buffer, fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_truncated_images_are_rejected_at_build_time_and_decoded_once(tmp_path, monkeypatch):
    from PIL import Image

    from skyeye.data.sources import base
    from skyeye.images import load_image

    images = tmp_path / "root" / "set" / "imgs"
    images.mkdir(parents=True)
    Image.effect_noise((64, 48), 60).convert("RGB").save(images / "whole.jpg")
    _cut(images / "cut.jpg", "JPEG")
    _cut(images / "cut.png", "PNG")
    names = ["whole.jpg", "cut.jpg", "cut.png"]
    for name in names[1:]:
        with Image.open(images / name) as header:
            assert header.size == (64, 48), "the header alone does not show the damage"
    entries = [{"filename": n, "split": "train", "sentences": [{"raw": f"{n} one ."}, {"raw": f"{n} two ."}]}
               for n in names]  # fmt: skip
    (images.parent / "dataset.json").write_text(json.dumps({"images": entries}))
    loads = []
    monkeypatch.setattr(base, "load_image", lambda path: loads.append(path) or load_image(path))
    source = {"adapter": "karpathy", "path": "set", "splits": ["train"], "tasks": ["caption", "conversation"]}
    recipe = Recipe.from_dict({"name": "t", "sources": [{"name": "a", **source}, {"name": "b", **source}]}, "t")
    stats = Builder(recipe, tmp_path / "root", tmp_path / "out", progress=False).run()

    assert sorted(loads) == sorted(images / n for n in names), "each distinct image is decoded once per build"
    for source_stats in stats["sources"].values():
        for task, count in source_stats["tasks"].items():
            bad_units = (len(names) - 1) * (2 if task == "caption" else 1)
            assert count["rejected"] == {"unreadable image": bad_units}
            assert count["written"] + bad_units + count["sampled_out"] == count["read"]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["key"].split("#")[0] for r in rejects} == set(names[1:])
    assert all("truncated" in r["detail"] and f"set/imgs/{r['key'].split('#')[0]}" in r["detail"] for r in rejects)
    records = list(iter_records(tmp_path / "out"))
    assert records and {r.images[0] for r in records} == {"set/imgs/whole.jpg"}
    assert all(load_image(tmp_path / "root" / r.images[0]).image.size == tuple(r.image_size) for r in records)


def test_build_with_no_source_on_disk_fails_and_says_where_it_looked(fake_source, tmp_path, capsys):
    from skyeye.cli import main

    recipe = tmp_path / "two.yaml"
    recipe.write_text(json.dumps({"name": "two", "sources": [
        {"name": name, "adapter": "fake", "path": f"{name}-folder", "splits": ["train"], "tasks": ["caption"]}
        for name in ("first", "second")]}))  # fmt: skip
    (tmp_path / "root").mkdir()
    assert main(["data", "build", str(recipe), "--root", str(tmp_path / "root"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) != 0  # fmt: skip
    error = capsys.readouterr().err
    assert error.startswith("skyeye: error:") and len(error.strip().splitlines()) == 1
    for name in ("first", "second"):
        assert f"{name} ({tmp_path / 'root' / name}-folder)" in error
    assert not (tmp_path / "out" / "shards").exists()
    assert main(["data", "build", str(recipe), "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) != 0  # fmt: skip
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


def test_build_into_a_folder_holding_records_refuses_or_replaces(fake_source, tmp_path):
    (tmp_path / "root" / "fake").mkdir(parents=True)
    out = tmp_path / "out"
    Builder(_recipe(), tmp_path / "root", out, progress=False).run()
    stale = out / "shards" / "old-source-train-00000.jsonl"
    stale.write_text((out / "shards" / "fake-captions-train-00000.jsonl").read_text())
    with pytest.raises(FileExistsError, match=rf"{re.escape(str(out))}.*--overwrite"):
        Builder(_recipe(limit=1), tmp_path / "root", out, progress=False).run()
    assert stale.exists(), "a refusal changes nothing"
    stats = Builder(_recipe(limit=1), tmp_path / "root", out, progress=False, overwrite=True).run()
    assert not stale.exists()
    assert sum(1 for _ in iter_records(out)) == stats["records_written"]


def test_build_help_lists_every_bundled_recipe(capsys):
    from importlib import resources

    from skyeye.cli import main

    bundled = sorted(p.name[: -len(".yaml")] for p in (resources.files("skyeye") / "configs" / "data").iterdir()
                     if p.name.endswith(".yaml"))  # fmt: skip
    assert len(bundled) >= 3
    with pytest.raises(SystemExit):
        main(["data", "build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in bundled:
        assert re.search(rf"\b{re.escape(name)}\b", text), name


def test_scene_records_ask_in_several_ways_over_varied_class_lists_that_hold_the_answer():
    from skyeye.class_lists import SCENE
    from skyeye.data.instructions import SCENE_OPEN
    from skyeye.data.sources.base import Example

    classes = [f"class {letter}" for letter in "abcdefghijklmnopqrstuvwxyz"]
    example = Example("aid", "train", "Bridge/bridge_1.jpg", "scene", ["b.jpg"], [150, 150],
                      {"label": "class q", "classes": classes})  # fmt: skip
    users = []
    for seed in range(200):
        record = make_record(example, "scene", seed=seed)
        assert record.turns[0]["assistant"] == "class q"
        users.append(record.turns[0]["user"])
    listed = [u for u in users if "class a" in u or "class b" in u or "class z" in u]
    assert all("class q" in u for u in listed if not any(q in u for q in SCENE_OPEN))
    standard = [u for u in users if SCENE.split("{")[0] in u]
    assert 0.25 < len(standard) / len(users) < 0.6, "the standard prompt is one phrasing among several"
    assert len({u.split(":")[0] for u in users}) >= 5, "one phrasing only"
    lists = {tuple(u.split(": ", 1)[1].split(". Answer")[0].split(", ")) for u in standard}
    assert len(lists) > 20 and any(len(names) < len(classes) for names in lists)
    assert any(list(names) != sorted(names) for names in lists), "the class order never changes"
    assert any(not u.startswith("[vqa]") for u in users) and any(u.startswith("[vqa]") for u in users)
    assert any(q in u for u in users for q in SCENE_OPEN)
    assert make_record(replace_label(example, "class unknown"), "scene").reason == "label not among the classes"


def replace_label(example, label):
    return replace(example, fields={**example.fields, "label": label})
