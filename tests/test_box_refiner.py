"""The box refiner: its training phase (labels from detection answers, augmented boxes, checkpoints, hand-over to the
saved model) and what it does to answers (boxes moved onto detected objects, or kept)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from skyeye.boxes import format_phrase, parse_boxes, pixel_to_grid
from skyeye.data.record import Record
from skyeye.data.shards import ShardWriter
from skyeye.model.box_refiner import BoxRefiner
from skyeye.train import box_refiner as phase
from skyeye.train.config import BoxRefinerConfig, DataSpec, TrainConfig

from conftest import PhaseRuns, small_conv_config

SIDE = 64  # image side of the generated scenes


@pytest.fixture(scope="module")
def boxed_scenes(tmp_path_factory):
    """Grey noisy images, each with one red square and one or two blue ones, as detection records: one per class,
    the blue ones named in singular or plural as NWPU VHR-10's records are."""
    folder = tmp_path_factory.mktemp("boxed")
    (folder / "imgs").mkdir()
    rng = np.random.default_rng(0)
    with ShardWriter(folder) as writer:
        for i in range(20):
            split = "val" if i >= 16 else "train"
            pixels = np.clip(128 + rng.normal(0, 20, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
            named = {"red square": [], "blue square": []}
            for name, colour in [("red square", (220, 30, 30))] + [("blue square", (30, 30, 220))] * (1 + i % 2):
                size = int(rng.integers(10, 20))
                x, y = (int(v) for v in rng.integers(0, SIDE - size, 2))
                pixels[y : y + size, x : x + size] = colour
                named[name].append(pixel_to_grid((x, y, x + size, y + size), SIDE, SIDE))
            Image.fromarray(pixels).save(folder / f"imgs/{i}.png")
            for name, boxes in named.items():
                phrase = name if len(boxes) == 1 else name + "s"
                turn = {"user": f"[detection] {phrase}", "assistant": format_phrase(phrase, boxes)}
                record = Record(f"{i}/{name}", "squares", split, "detection", [f"imgs/{i}.png"], [SIDE, SIDE], [turn])
                writer.write(f"x-{split}", record)
    return folder


def refiner_stage(records: Path, tmp_path: Path, model: Path, **changes) -> TrainConfig:
    spec = {"records": str(records), "root": str(records)}
    refiner = {"data": [spec], "epochs": 4, "batch_size": 8, "lr": 1e-2, "eval_every": 2, "save_every": 2, **changes}
    return TrainConfig.from_dict({"model": str(model), "out": str(tmp_path / "run"), "steps": 0,
                                  "box_refiner": refiner}, "test")  # fmt: skip


def test_a_stage_of_steps_0_trains_a_refiner_alone_and_saves_it_with_the_model(boxed_scenes, tmp_path, monkeypatch):
    from skyeye.model.loading import load_model
    from skyeye.train.loop import train

    model_yaml = tmp_path / "model.yaml"
    small_conv_config().to_yaml(model_yaml)
    stage = refiner_stage(boxed_scenes, tmp_path, model_yaml)
    final = train(stage, progress=False)

    report = json.loads((tmp_path / "run" / "box-refiner" / "box_refiner.json").read_text())
    assert report["classes"] == ["blue square", "red square"]  # "blue squares" is the same class
    assert report["train_images"] == 16 and report["val_images"] == 4
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    assert "val_unique_object_acc50" in report["history"][-1]
    model = load_model(final)
    assert model.cfg.box_refiner.classes == report["classes"]
    saved = load_file(str(tmp_path / "run" / "box-refiner" / "box_refiner.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.box_refiner.state_dict().items())
    # The decoder did not learn, and the refiner is never part of what instruction tuning trains.
    untouched = load_model(model_yaml)
    assert all(torch.equal(v, untouched.state_dict()[k]) for k, v in model.state_dict().items()
               if not k.startswith("box_refiner."))  # fmt: skip
    model.set_trainable(["vision", "alignment", "llm", "lora"])
    assert not any(p.requires_grad for p in model.box_refiner.parameters())
    from skyeye.model.info import describe

    summary = describe(final)
    assert "boxes     moved by a box refiner onto the objects it detects (blue square, red square)" in summary
    refiner_size = sum(p.numel() for p in model.box_refiner.parameters())
    assert f"box refiner (tower + dense head){0:>16,}{refiner_size:>16,}" in summary

    # Run again, the finished phase is loaded, not trained again, and the same model is written.
    first = load_file(str(final / "model.safetensors"))
    monkeypatch.setattr(phase, "augmented", lambda *a: pytest.fail("the finished phase trained again"))
    again = load_file(str(train(stage, progress=False) / "model.safetensors"))
    assert again.keys() == first.keys() and all(torch.equal(again[k], v) for k, v in first.items())


def test_a_killed_refiner_phase_resumes_where_it_stopped(boxed_scenes, tmp_path, tokenizer, monkeypatch):
    from skyeye.model.skyeye import SkyEye

    settings = BoxRefinerConfig(data=[DataSpec(records=str(boxed_scenes), root=str(boxed_scenes))], epochs=4,
                                batch_size=8, lr=1e-2, eval_every=2, save_every=2)  # fmt: skip  # 2 steps/epoch

    def start(out: Path):
        model = SkyEye(small_conv_config(), tokenizer)
        return model, phase.train_box_refiner(model, settings, out, seed=0, progress=False)

    run = PhaseRuns(monkeypatch, phase, start)
    straight, straight_report = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_at=40)  # in epoch 3 (16 images an epoch), after the checkpoint of epoch 2
    resumed, resumed_report = run(tmp_path / "killed")
    assert run.calls == 32, "the resumed phase did not start at epoch 3"
    assert resumed_report == straight_report
    expected = straight.box_refiner.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.box_refiner.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["box_refiner.json", "box_refiner.safetensors"]


def test_augmented_boxes_follow_the_crop_flip_and_turn_of_their_image():
    image = torch.zeros(3, 80, 80, dtype=torch.uint8)
    image[:, 20:40, 30:60] = 255  # a bright box: x 30..60, y 20..40 of 80
    boxes = torch.tensor([[0, 30 / 80, 20 / 80, 60 / 80, 40 / 80]])
    generator = torch.Generator().manual_seed(0)
    for _ in range(24):
        view, moved = phase.augmented(image, boxes, 40, 0.6, generator)
        bright = (view[0] > 0.5).nonzero()
        if not len(moved):  # the crop left the box's centre out
            continue
        seen = (bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1)
        assert moved[0, 1:] * 40 == pytest.approx([float(v) for v in seen], abs=1.5)  # pixels of a 40 px view


class StandInRefiner(BoxRefiner):
    """A stand-in refiner with fixed outputs (the test is about what is done with them) on a 4 x 4 grid: the cell at
    row 1, column 2 holds a thing (box x 55..70, y 30..45 of 100), the cell at row 3, column 3 a harbor (x 80..95,
    y 85..98); every other cell a weak guess at 0..10."""

    def __init__(self, objectness: float = 0.9):
        cfg = small_conv_config()
        super().__init__(cfg.vision, ["thing", "harbors"])
        self.objectness = objectness
        self.seen = []  # the pixels it was given

    def forward(self, pixels):
        self.seen.append(pixels)
        logits = torch.full((1, 16, 2), -4.0)
        logits[0, 6, 0] = logits[0, 15, 1] = torch.logit(torch.tensor(self.objectness))
        boxes = torch.tensor([0.0, 0.0, 0.1, 0.1]).repeat(1, 16, 1)
        boxes[0, 6] = torch.tensor([0.55, 0.30, 0.70, 0.45])
        boxes[0, 15] = torch.tensor([0.80, 0.85, 0.95, 0.98])
        return logits, boxes


def test_written_boxes_move_to_the_object_detected_next_to_them():
    pixels = torch.zeros(1, 3, 32, 32)
    refiner = StandInRefiner()
    near = "{<40><20><75><40>}"  # centre (57, 30): cell row 1, column 2, the object's own cell
    beside = "{<30><40><45><55>}"  # centre (37, 47): row 1, column 1, a neighbour
    far = "{<0><80><10><95>}"  # centre (5, 87): row 3, column 0, two cells away
    text = f"<p>the thing</p> {far} and {beside}<delim>{near}."
    refined = refiner.refine(text, pixels)
    # The far box stays; the box beside the object takes it; the next one near it stays: one object, one box.
    assert parse_boxes(refined) == [(0, 80, 10, 95), (55, 30, 70, 45), (40, 20, 75, 40)]
    assert refined == f"<p>the thing</p> {far} and {{<55><30><70><45>}}<delim>{near}."
    assert refiner.refine(near, pixels) == "{<55><30><70><45>}"
    assert StandInRefiner(objectness=0.1).refine(near, pixels) == near  # nothing the refiner is sure of nearby


def test_a_class_the_question_names_is_looked_for_in_the_whole_image():
    pixels = torch.zeros(1, 3, 32, 32)
    refiner = StandInRefiner()
    near_the_thing = "{<40><20><75><40>}"
    harbor = "{<80><85><95><98>}"
    assert refiner.named_class("[refer] where is the harbor ?") == 1
    assert refiner.named_class("the harbors and the thing") is None  # two classes: neither
    assert refiner.named_class("the harborside") is None  # whole words only
    # One box asked for a harbor goes to the harbor wherever the decoder put it; asked for a thing, to the thing.
    assert refiner.refine(near_the_thing, pixels, "[refer] where is the harbor?") == harbor
    assert refiner.refine(harbor, pixels, "the thing") == "{<55><30><70><45>}"
    # Several boxes (a detection answer) each stay near where they were written, among cells of the named class.
    two = f"{near_the_thing}<delim>{{<85><80><95><95>}}"
    assert refiner.refine(two, pixels, "[detection] harbors") == f"{near_the_thing}<delim>{harbor}"
    # A class it is not sure of anywhere leaves the box as written.
    assert StandInRefiner(objectness=0.1).refine(near_the_thing, pixels, "the harbor") == near_the_thing


def test_answers_carry_refined_boxes_unless_raw_boxes_are_asked_for(tokenizer):
    from transformers import LogitsProcessor

    from skyeye.model.skyeye import SkyEye

    class WriteThis(LogitsProcessor):
        """Makes the stand-in decoder write `text` (the test is about what happens to its boxes)."""

        def __init__(self, text):
            self.ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

        def __call__(self, input_ids, scores):
            step = min(input_ids.shape[1], len(self.ids) - 1)  # generating from embeddings: only new ids
            forced = torch.full_like(scores, -float("inf"))
            forced[:, self.ids[step]] = 0
            return forced

    torch.manual_seed(0)
    model = SkyEye(small_conv_config(), tokenizer).eval()
    model.box_refiner = StandInRefiner()
    image = Image.new("RGB", (200, 100))
    written = "{<40><20><75><40>}"
    answers = {}
    for refine in (True, False):
        processor = WriteThis(written)
        processor.start = 0  # generate on embeddings returns only new tokens: input_ids start empty
        answers[refine] = model.ask(image, "[refer] the thing", logits_processor=[processor], refine_boxes=refine)
    assert answers[False].text == written
    assert answers[True].text == "{<55><30><70><45>}"
    assert answers[True].boxes[0].pixels == pytest.approx((110, 30, 140, 45))  # in the 200 x 100 image's pixels
    assert answers[True].conversation.turns[-1].assistant == answers[True].text

    # In a batch, each answer's boxes are refined on its own image.
    images = [Image.new("RGB", (64, 64), "black"), Image.new("RGB", (64, 64), "white")]
    model.box_refiner.seen.clear()
    batch = model.ask_many(images, ["[refer] the thing"] * 2, logits_processor=[WriteThis(written)])
    assert [answer.text for answer in batch] == ["{<55><30><70><45>}"] * 2
    expected = model.cfg.vision.to_pixels(images)
    given = [seen[0] for seen in model.box_refiner.seen]
    assert len(given) == 2 and all(torch.equal(a, b) for a, b in zip(given, expected, strict=True))


def test_bad_refiner_inputs_are_one_line_errors_naming_the_record_or_file(boxed_scenes, tmp_path, tokenizer):
    from skyeye.model.skyeye import SkyEye
    from skyeye.settings import ConfigError

    unnamed = tmp_path / "unnamed"
    (unnamed / "imgs").mkdir(parents=True)
    Image.new("RGB", (SIDE, SIDE)).save(unnamed / "imgs/0.png")
    with ShardWriter(unnamed) as writer:  # a grounding answer: a box without a phrase, so no class to learn
        turn = {"user": "[refer] the square", "assistant": "{<10><10><40><40>}"}
        writer.write("x-train", Record("g/0", "squares", "train", "grounding", ["imgs/0.png"], [SIDE, SIDE], [turn]))
    settings = BoxRefinerConfig(data=[DataSpec(records=str(unnamed), root=str(unnamed))], epochs=1)
    with pytest.raises(ConfigError, match=r"g/0: box_refiner needs answers of named boxes"):
        model = SkyEye(small_conv_config(), tokenizer)
        phase.train_box_refiner(model, settings, tmp_path / "out", seed=0, progress=False)

    done = tmp_path / "done"
    settings = BoxRefinerConfig(data=[DataSpec(records=str(boxed_scenes), root=str(boxed_scenes))], epochs=1,
                                batch_size=8)  # fmt: skip
    phase.train_box_refiner(SkyEye(small_conv_config(), tokenizer), settings, done, seed=0, progress=False)
    (done / phase.REPORT_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=rf"{done / phase.REPORT_FILE}: unreadable box refiner report"):
        phase.load_trained_refiner(SkyEye(small_conv_config(), tokenizer), done)
