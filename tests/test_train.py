"""Training: config validation, order, kill/resume equivalence and the 2-process step equivalence."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from skyeye.data.record import Record
from skyeye.data.shards import ShardWriter
from skyeye.settings import ConfigError
from skyeye.train import state
from skyeye.train.config import TrainConfig
from skyeye.train.loop import Trainer
from skyeye.train.order import BatchOrder

from conftest import small_config

WORDS = ["a", "green", "farmland", "with", "some", "roads", "and", "many", "buildings", "near", "the", "river"]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """Twelve images with captions of varied length and grounding answers, as a built records folder."""
    folder = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    with ShardWriter(folder, records_per_shard=7) as writer:
        for i in range(12):
            image = f"imgs/{i}.png"
            (folder / "imgs").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / image)
            caption = " ".join(WORDS[: 3 + i % 9])
            task, user, answer = (
                ("caption", "[caption] Briefly describe this image.", caption)
                if i % 3
                else ("grounding", "[refer] the river", "{<10><20><60><90>}")
            )
            writer.write("fake-train", Record(f"fake/train/{task}/{i}", "fake", "train", task, [image], [48, 40],
                                              [{"user": user, "assistant": answer}]))  # fmt: skip
        writer.write("fake-val", Record("fake/val/caption/0", "fake", "val", "caption", ["imgs/0.png"], [48, 40],
                                        [{"user": "[caption] Describe.", "assistant": "held out"}]))  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory) -> Path:
    cfg = small_config(tokenizer="bundled:tokenizer-tiny")
    cfg.lora.dropout = 0.1  # dropout draws random numbers: resuming must restore the RNG to match
    path = tmp_path_factory.mktemp("model") / "model.yaml"
    cfg.to_yaml(path)
    return path


def _config(records: Path, model_yaml: Path, out: Path, **changes) -> TrainConfig:
    data = {"model": str(model_yaml), "out": str(out), "data": [{"records": str(records), "root": str(records)}],
            "steps": 6, "batch_size": 4, "save_every": 3, "log_every": 1, "trainable": ["alignment", "lora"],
            "optim": {"lr": 1e-3, "warmup_steps": 2}}  # fmt: skip
    return TrainConfig.from_dict({**data, **changes}, "test")


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown field\(s\) optim.lrr"):
        TrainConfig.from_dict({"data": [{"records": "x"}], "optim": {"lrr": 1}}, "t.yaml")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) data\[0\].recrods"):
        TrainConfig.from_dict({"data": [{"recrods": "x"}]}, "t.yaml")
    with pytest.raises(ConfigError, match="t.yaml: data lists no record folders"):
        TrainConfig.from_dict({}, "t.yaml")
    with pytest.raises(ConfigError, match="steps 0 trains nothing"):
        TrainConfig.from_dict({"steps": 0}, "t.yaml")
    with pytest.raises(ConfigError, match="cannot be combined with augment"):
        TrainConfig.from_dict({"data": [{"records": "x"}], "cache_visual": True, "augment": {"flip": True}}, "t.yaml")
    path = tmp_path / "c.yaml"
    path.write_text("data: [{records: x}]\nsteps: 5\n")
    cfg = TrainConfig.load(path, ["steps=7", "optim.lr=3e-4"])
    assert (cfg.steps, cfg.optim.lr) == (7, 3e-4)
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        TrainConfig.load(path, ["steps"])


def test_a_word_yaml_reads_as_a_boolean_gets_told_to_quote_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: tiny\ndata:\n  - records: records\nprecision: no\n")
    quote = r'quote the word \(e.g. precision: "no"\)'
    with pytest.raises(ConfigError, match=rf"^{path}: precision must be str, got False: .* {quote}"):
        TrainConfig.load(path)
    path.write_text('model: tiny\ndata:\n  - records: records\nprecision: "no"\n')
    assert TrainConfig.load(path).precision == "no"


def test_batch_order_is_reproducible_weighted_and_length_grouped():
    lengths = np.arange(100, dtype=np.int32)
    spec_ids = np.array([0] * 60 + [1] * 40)
    order = BatchOrder(lengths, spec_ids, [1.0, 0.5], global_batch=4, seed=3, group_by_length=True)
    again = BatchOrder(lengths, spec_ids, [1.0, 0.5], global_batch=4, seed=3, group_by_length=True)
    first = np.concatenate(order.epoch(0))
    assert np.array_equal(first, np.concatenate(again.epoch(0)))
    assert not np.array_equal(first, np.concatenate(order.epoch(1)))
    assert set(range(60)) - set(first.tolist()) == set() or len(set(range(60)) - set(first.tolist())) < 4
    assert 5 < np.isin(first, np.arange(60, 100)).sum() < 35  # about half of the 0.5-weight source
    spread = np.mean([np.ptp(lengths[b]) for b in order.epoch(0)])
    plain = BatchOrder(lengths, spec_ids, [1.0, 0.5], global_batch=4, seed=3, group_by_length=False)
    assert spread < np.mean([np.ptp(lengths[b]) for b in plain.epoch(0)]) / 3
    walk = order.batches_from(0, len(order.epoch(0)) - 1)
    assert [next(walk)[:2] for _ in range(2)] == [(0, len(order.epoch(0)) - 1), (1, 0)]


def test_training_learns_and_writes_a_loadable_model(records, model_yaml, tmp_path):
    from skyeye.model.loading import load_model

    final = Trainer(_config(records, model_yaml, tmp_path / "run", steps=8, save_every=4), progress=False).run()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[0]["lr"] < metrics[1]["lr"]  # warmup
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["latest", "step-0000004",
                                                                                    "step-0000008"]  # fmt: skip
    model = load_model(final)
    assert model.ask(records / "imgs/1.png", "[caption] Briefly describe this image.", max_new_tokens=4).text


def test_killed_and_resumed_run_reaches_the_same_weights(records, model_yaml, tmp_path, monkeypatch):
    straight = Trainer(_config(records, model_yaml, tmp_path / "a"), progress=False)
    straight.run()

    killed = Trainer(_config(records, model_yaml, tmp_path / "b"), progress=False)
    real_step = Trainer._step

    def crash_at_step_5(self, micro):
        if self.progress.step == 4:
            raise KeyboardInterrupt("killed")
        return real_step(self, micro)

    monkeypatch.setattr(Trainer, "_step", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    monkeypatch.setattr(Trainer, "_step", real_step)
    # A crash in the middle of writing the next checkpoint leaves a .partial folder that must be ignored.
    state.partial_path(tmp_path / "b", 6).mkdir(parents=True)
    assert state.latest(tmp_path / "b").name == "step-0000003"
    with (tmp_path / "b" / "metrics.jsonl").open("a") as log:  # and a kill in the middle of a log line
        log.write('{"step": 5, "lo')

    resumed = Trainer(_config(records, model_yaml, tmp_path / "b"), progress=False)
    assert resumed.resume() and resumed.progress.step == 3
    resumed.run()
    a = load_file(tmp_path / "a" / "checkpoints" / "step-0000006" / "trainable.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "step-0000006" / "trainable.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"
    logged = [[(m["step"], m["loss"]) for m in map(json.loads, (tmp_path / run / "metrics.jsonl").open())]
              for run in ("a", "b")]  # fmt: skip
    assert logged[1] == logged[0] and [step for step, _ in logged[0]] == list(range(1, 7))


def test_resuming_with_more_steps_says_where_the_rebuilt_schedule_puts_the_learning_rate(records, model_yaml,
                                                                                        tmp_path, capsys):  # fmt: skip
    Trainer(_config(records, model_yaml, tmp_path / "run", steps=4, save_every=4), progress=False).run()
    capsys.readouterr()
    longer = Trainer(_config(records, model_yaml, tmp_path / "run", steps=8, save_every=4), progress=False)
    assert longer.resume()
    said = capsys.readouterr().err
    assert "steps changed from 4 to 8" in said and f"{longer.base_lr():.2e} at step 4" in said
    same = Trainer(_config(records, model_yaml, tmp_path / "run", steps=4, save_every=4), progress=False)
    assert same.resume() and "steps changed" not in capsys.readouterr().err


def _tiny_checkpoint(folder: Path):
    """A published checkpoint of a one-layer model after one step: state.py alone, no Trainer."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    partial = state.write_partial(folder, model, optimizer, scheduler, state.Progress(step=1))
    state.save_rng(partial, 0)
    return state.publish(partial, keep=2), model, optimizer, scheduler


class RunsCode:
    """Unpickling this creates a folder: what a crafted run folder could do with any other code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_resumed_metrics_log_starts_a_new_line_after_a_row_cut_just_before_its_newline(tmp_path):
    from skyeye.train import metrics_log

    path = tmp_path / metrics_log.METRICS_FILE
    path.write_text('{"step": 10, "loss": 2.0}\n{"step": 20, "loss": 1.5}')  # killed before the last newline
    with metrics_log.open_log(tmp_path, step=20) as log:
        log.write(json.dumps({"step": 30, "loss": 1.2}) + "\n")
    rows, cut = metrics_log.read_log(path)
    assert [row["step"] for row in rows] == [10, 20, 30] and not cut


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng-0.pt"])
def test_resume_refuses_a_checkpoint_file_that_would_run_code(tmp_path, name):
    checkpoint, model, optimizer, scheduler = _tiny_checkpoint(tmp_path / "run")
    marker = tmp_path / "code-ran"
    torch.save({"state": RunsCode(marker), "param_groups": []}, checkpoint / name)
    with pytest.raises(ValueError, match=rf"^{checkpoint / name}: refused: .*posix.mkdir") as error:
        state.load(checkpoint, model, optimizer, scheduler)
    assert not marker.exists(), "resuming ran code from the checkpoint"
    assert "\n" not in str(error.value)
    (checkpoint / name).write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=rf"^{checkpoint / name}: not a readable torch file"):
        state.load(checkpoint, model, optimizer, scheduler)


def test_resume_names_a_damaged_or_misshapen_trainable_weights_file(tmp_path):
    checkpoint, model, optimizer, scheduler = _tiny_checkpoint(tmp_path / "run")
    weights = checkpoint / "trainable.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])  # a copy cut short
    with pytest.raises(ValueError, match=rf"^{weights}: not a readable safetensors file") as error:
        state.load(checkpoint, model, optimizer, scheduler)
    assert "\n" not in str(error.value)
    save_file({"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, weights)  # the right names, one shape wrong
    with pytest.raises(ValueError, match=rf"^{weights}: weight has shape \(4, 3\), the model expects \(2, 3\)"):
        state.load(checkpoint, model, optimizer, scheduler)
    save_file({"weight": torch.zeros(2, 3), "bias": torch.zeros(2, dtype=torch.int64)}, weights)
    with pytest.raises(ValueError, match=rf"^{weights}: bias holds int64 values, the model expects floating point"):
        state.load(checkpoint, model, optimizer, scheduler)
    save_file({"weight": torch.zeros(2, 3), "scale": torch.zeros(2)}, weights)  # a weight of another model
    with pytest.raises(ValueError, match=rf"(?s)^{weights}: the tensors do not match.*1 missing: bias.*scale.*changed"):
        state.load(checkpoint, model, optimizer, scheduler)


def test_resume_restores_every_rng_from_plain_data_and_reads_the_older_numpy_form(tmp_path):
    import random

    checkpoint, model, optimizer, scheduler = _tiny_checkpoint(tmp_path / "run")
    assert torch.load(checkpoint / "rng-0.pt", weights_only=True)  # tensors and plain data only, no allowlist

    def draws():
        return random.random(), np.random.rand(), torch.rand(1).item()

    saved = draws()
    state.load(checkpoint, model, optimizer, scheduler)
    assert draws() == saved
    older = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(older, checkpoint / "rng-0.pt")
    saved = draws()
    state.load(checkpoint, model, optimizer, scheduler)
    assert draws() == saved


def test_visual_cache_gives_the_same_step_as_pixels(records, model_yaml, tmp_path):
    plain = Trainer(_config(records, model_yaml, tmp_path / "p", steps=1), progress=False)
    plain.run()
    cached = Trainer(_config(records, model_yaml, tmp_path / "c", steps=1, cache_visual=True), progress=False)
    cached.run()
    for name, param in plain.model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param, dict(cached.model.named_parameters())[name], rtol=1e-5, atol=1e-6)


TWO_PROCESS_STEP = """
import sys
from safetensors.torch import save_file
from skyeye.train.config import TrainConfig
from skyeye.train.loop import Trainer
from skyeye.train.state import trainable_state
import yaml
cfg = TrainConfig.from_dict(yaml.safe_load(open(sys.argv[1])), sys.argv[1])
trainer = Trainer(cfg, progress=False)
trainer.run()
if trainer.accelerator.is_main_process:
    save_file(trainable_state(trainer.model), sys.argv[2])
"""


def test_two_processes_take_the_same_step_as_one(records, model_yaml, tmp_path):
    import yaml

    no_dropout = tmp_path / "model.yaml"
    no_dropout.write_text(model_yaml.read_text().replace("dropout: 0.1", "dropout: 0.0"))
    from skyeye.model.loading import load_model

    no_warmup = {"lr": 1e-3, "warmup_steps": 0}
    single = _config(records, no_dropout, tmp_path / "one", steps=1, batch_size=4, optim=no_warmup)
    Trainer(single, progress=False).run()
    pair = _config(records, no_dropout, tmp_path / "two", steps=1, batch_size=2, optim=no_warmup)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(pair.to_dict()))
    (tmp_path / "step.py").write_text(TWO_PROCESS_STEP)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
         str(tmp_path / "step.py"), str(tmp_path / "two.yaml"), str(tmp_path / "two.safetensors")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    two = load_file(tmp_path / "two.safetensors")
    one = load_file(tmp_path / "one" / "checkpoints" / "step-0000001" / "trainable.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
    initial = state.trainable_state(load_model(no_dropout).train())
    assert any(not torch.equal(initial[name], one[name]) for name in one), "the step changed nothing"


def test_collated_batch_learns_only_the_answers_and_their_end_tokens(records, tokenizer):
    from skyeye.train.config import AugmentConfig
    from skyeye.train.samples import SampleMaker, collate_samples

    cfg = small_config(tokenizer="bundled:tokenizer-tiny")
    maker = SampleMaker(cfg, tokenizer, AugmentConfig(), max_length=200, seed=0)
    two_turns = Record("x/train/conversation/0", "x", "train", "conversation", ["imgs/0.png"], [48, 40],
                       [{"user": "[caption] Describe.", "assistant": "a green farmland"},
                        {"user": "[vqa] How many roads?", "assistant": "two"}])  # fmt: skip
    short = Record("x/train/vqa/1", "x", "train", "vqa", ["imgs/1.png"], [48, 40],
                   [{"user": "[vqa] Is it a river?", "assistant": "no"}])  # fmt: skip
    samples = [maker(two_turns, records, 0, 0), maker(short, records, 0, 1)]
    batch = collate_samples(samples, tokenizer.pad_token_id)
    assert batch["pixels"].shape == (2, 3, 56, 56)
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    for row, answers in enumerate([["a green farmland", "two"], ["no"]]):
        learned = batch["labels"][row][batch["labels"][row] != -100].tolist()
        expected = []
        for answer in answers:
            expected += tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert learned == expected
        assert int(batch["image_mask"][row].sum()) == cfg.visual_tokens_per_image
    too_long = Record("x/train/vqa/2", "x", "train", "vqa", ["imgs/1.png"], [48, 40],
                      [{"user": "[vqa] " + "why " * 300, "assistant": "no"}])  # fmt: skip
    assert maker(too_long, records, 0, 2) is None and maker.skipped == {"prompt longer than max_length": 1}


def test_bundled_training_configs_load():
    from importlib import resources

    folder = Path(str(resources.files("skyeye") / "configs" / "train"))
    for path in sorted(folder.glob("*.yaml")):
        cfg = TrainConfig.load(path)
        phases = [phase for phase in (cfg.tower, cfg.box_refiner, cfg.self_critical) if phase is not None]
        assert (cfg.data and cfg.steps > 0) or (cfg.steps == 0 and phases and all(p.data for p in phases)), path


def test_records_with_directions_keep_their_geometry_and_boxes_follow_their_image(records, tokenizer):
    from skyeye.train.config import AugmentConfig
    from skyeye.train.samples import SampleMaker

    cfg = small_config(tokenizer="bundled:tokenizer-tiny")
    plain = SampleMaker(cfg, tokenizer, AugmentConfig(), max_length=200, seed=0)
    turned = SampleMaker(cfg, tokenizer, AugmentConfig(flip=True, rotate=True, crop_scale=0.5), max_length=200, seed=0)

    def record(answer: str) -> Record:
        return Record("x/train/vqa/0", "x", "train", "vqa", ["imgs/0.png"], [48, 40],
                      [{"user": "[vqa] Where is the river?", "assistant": answer}])  # fmt: skip

    bound = record("on the left side")
    assert torch.equal(turned(bound, records, 0, 0).pixels, plain(bound, records, 0, 0).pixels)
    for answer in ("near the houses", "{<10><20><60><90>}"):
        views = [turned(record(answer), records, epoch, 0) for epoch in range(6)]
        assert not all(torch.equal(v.pixels, plain(record(answer), records, 0, 0).pixels) for v in views)
    boxed = [turned(record("{<10><20><60><90>}"), records, epoch, 0).encoded.input_ids for epoch in range(6)]
    assert len({tuple(ids) for ids in boxed}) > 1, "the box in the answer never moved with the image"


@pytest.mark.parametrize("seed", range(8))
def test_a_box_moved_with_its_flipped_and_turned_image_still_covers_the_object(seed):
    import random

    import numpy as np
    from PIL import Image

    from skyeye.boxes import format_box, parse_boxes, pixel_to_grid
    from skyeye.train.config import AugmentConfig
    from skyeye.train.samples import augment, moved_boxes

    width, height, drawn = 200, 120, (30, 70, 90, 110)  # a red object in a non-square image
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[drawn[1] : drawn[3], drawn[0] : drawn[2]] = (255, 0, 0)
    box = format_box(pixel_to_grid(drawn, width, height))
    record = Record("x/train/grounding/0", "x", "train", "grounding", ["a.png"], [width, height],
                    [{"user": "[refer] the object", "assistant": box}])  # fmt: skip
    settings = AugmentConfig(flip=True, rotate=True, crop_scale=0.5)
    image, transposes = augment(Image.fromarray(pixels), settings, random.Random(seed), boxes=True)
    assert image.size in ((width, height), (height, width)), "an image with boxes was cropped"
    red = np.argwhere(np.asarray(image)[..., 0] > 128)
    found = pixel_to_grid((red[:, 1].min(), red[:, 0].min(), red[:, 1].max() + 1, red[:, 0].max() + 1), *image.size)
    (moved,) = parse_boxes(moved_boxes(record, transposes).turns[0]["assistant"])
    assert max(abs(a - b) for a, b in zip(moved, found, strict=True)) <= 1, (transposes, moved, found)


def test_lr_scale_gives_a_part_its_own_learning_rate(model_yaml, records, tmp_path):
    with pytest.raises(ConfigError, match="optim.lr_scale.tower: not a model part"):
        _config(records, model_yaml, tmp_path, optim={"lr_scale": {"tower": 0.1}})
    with pytest.raises(ConfigError, match="optim.lr_scale.vision must be a number > 0"):
        _config(records, model_yaml, tmp_path, optim={"lr_scale": {"vision": 0}})
    cfg = _config(records, model_yaml, tmp_path / "run", trainable=["vision", "alignment"],
                  optim={"lr": 1e-3, "warmup_steps": 0, "lr_scale": {"vision": 0.1}})  # fmt: skip
    trainer = Trainer(cfg, progress=False)
    by_lr = {}
    for group in trainer.optimizer.param_groups:
        by_lr.setdefault(round(group["lr"], 12), set()).update(id(p) for p in group["params"])
    vision = {id(p) for p in trainer.model.visual_encoder.parameters()} | {
        id(p) for p in trainer.model.ln_vision.parameters()}  # fmt: skip
    assert by_lr[1e-4] == vision
    assert by_lr[1e-3] == {id(p) for p in trainer.model.llama_proj.parameters()}


def test_a_scene_question_renamed_to_another_name_of_its_class_keeps_list_and_answer_in_step():
    from skyeye.class_lists import SCENE
    from skyeye.data.record import Record
    from skyeye.train.samples import renamed_class

    def scene(classes, label, question=None):
        user = question or SCENE.format(classes=", ".join(classes))
        return Record("r", "ucm", "train", "scene", ["a.png"], None, [{"user": user, "assistant": label}],
                      {"label": label})  # fmt: skip

    record = scene(["forest", "harbor", "airport", "beach"], "harbor")
    renamed = renamed_class(record, random.Random(0))
    user, answer = renamed.turns[0]["user"], renamed.turns[0]["assistant"]
    assert answer == "port" and "harbor" not in user
    assert user == record.turns[0]["user"].replace("harbor", "port")  # "airport" is another word, left alone
    # A list that already uses the other name, or a question without a list, cannot be renamed.
    taken = scene(["port", "harbor", "beach", "forest"], "harbor")
    assert renamed_class(taken, random.Random(0)) == taken
    open_question = scene([], "harbor", question="[vqa] What type of scene is this?")
    assert renamed_class(open_question, random.Random(0)) == open_question
    with pytest.raises(ConfigError, match="rename_classes"):
        TrainConfig.from_dict({"model": "tiny", "out": "x", "data": [{"records": "d"}],
                               "augment": {"rename_classes": 2}}, "test")  # fmt: skip


def test_a_later_stage_feeds_a_conv_tower_larger_images_and_the_saved_model_keeps_them(records, model_yaml, tmp_path):
    from skyeye.model.config import SkyEyeConfig, VisionConfig
    from skyeye.model.loading import load_model

    conv = SkyEyeConfig.from_yaml(model_yaml)
    conv.vision = VisionConfig(kind="conv", image_size=32, patch_size=8, width=16, depth=1)
    conv.to_yaml(tmp_path / "conv.yaml")
    first = Trainer(_config(records, tmp_path / "conv.yaml", tmp_path / "first", steps=2), progress=False).run()
    later = Trainer(_config(records, first, tmp_path / "later", steps=2, image_size=48), progress=False)
    assert later.model.cfg.visual_tokens_per_image == 36 // 4  # 6 x 6 cells of 8 px, merged 4 by 4
    closer = load_model(later.run())
    assert closer.cfg.vision.image_size == 48
    pixels = closer.cfg.vision.to_pixels([Image.new("RGB", (40, 48))])
    assert closer.visual_features(pixels).shape[1] == 36
    vit = _config(records, model_yaml, tmp_path / "vit", image_size=112)
    with pytest.raises(ConfigError, match="image_size 112: only a conv tower takes another size than its image_size"):
        Trainer(vit, progress=False)


def test_box_attention_and_a_number_line_train_a_loaded_model_and_log_their_loss(records, model_yaml, tmp_path):
    from skyeye.model.config import NumberLineSettings, SkyEyeConfig
    from skyeye.model.loading import load_model

    wide = SkyEyeConfig.from_yaml(model_yaml)
    wide.llm.hidden_size = 128  # room for the number line's code
    wide.to_yaml(tmp_path / "wide.yaml")
    box_attention = {"weight": 1.0, "layers": [1], "heads": [0, 3]}
    run = _config(records, tmp_path / "wide.yaml", tmp_path / "run", steps=6, box_attention=box_attention,
                  number_line={"visual": 2.0, "coordinates": 1.0})  # fmt: skip
    final = Trainer(run, progress=False).run()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("box_attention_loss", 0) > 0 for m in metrics)  # a third of the records write a box
    assert load_model(final).cfg.number_line == NumberLineSettings(visual=2.0, coordinates=1.0)
    beyond = _config(records, tmp_path / "wide.yaml", tmp_path / "bad", box_attention={"weight": 1.0, "layers": [2]})
    with pytest.raises(ValueError, match="box_attention: test has 2 layers of 4 heads"):
        Trainer(beyond, progress=False)


def _stage_yaml(path: Path, records: Path, model: str | Path, out: Path, **changes) -> Path:
    stage = {"model": str(model), "out": str(out), "data": [{"records": str(records), "root": str(records)}],
             "steps": 2, "batch_size": 4, "save_every": 2, "log_every": 1, "trainable": ["alignment", "lora"],
             **changes}  # fmt: skip
    path.write_text(yaml.safe_dump(stage))
    return path


def test_one_train_command_runs_a_recipe_stage_after_stage_and_resumes_it_without_training_again(
    records, model_yaml, tmp_path, capsys
):
    from skyeye.cli import main
    from skyeye.model.loading import load_model

    first = _stage_yaml(tmp_path / "first.yaml", records, model_yaml, tmp_path / "first")
    second = _stage_yaml(tmp_path / "second.yaml", records, tmp_path / "first" / "final", tmp_path / "second",
                         trainable=["alignment"])  # fmt: skip
    assert main(["train", str(first), str(second), "steps=3", "--no-progress"]) == 0
    assert "stage 2/2" in capsys.readouterr().err
    logs = {run: (tmp_path / run / "metrics.jsonl").read_text() for run in ("first", "second")}
    assert [json.loads(line)["step"] for line in logs["second"].splitlines()] == [1, 2, 3]  # the override reached it
    trained = load_file(tmp_path / "first" / "final" / "model.safetensors")
    weights = load_file(tmp_path / "second" / "final" / "model.safetensors")
    lora_b = [k for k in trained if "lora_B" in k]
    assert lora_b and any(trained[k].any() for k in lora_b)  # stage 1 moved LoRA from its zero start ...
    assert all(torch.equal(weights[k], trained[k]) for k in lora_b)  # ... and stage 2, which froze it, kept that
    assert load_model(tmp_path / "second" / "final").cfg.name == load_model(model_yaml).cfg.name

    assert main(["train", str(first), str(second), "steps=3", "--resume", "--no-progress"]) == 0
    assert {run: (tmp_path / run / "metrics.jsonl").read_text() for run in ("first", "second")} == logs
    again = load_file(tmp_path / "second" / "final" / "model.safetensors")
    assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in weights)


def test_a_recipe_is_checked_whole_before_its_first_stage_trains(records, model_yaml, tmp_path, capsys):
    from skyeye.cli import main

    first = _stage_yaml(tmp_path / "first.yaml", records, model_yaml, tmp_path / "first")
    typo = _stage_yaml(tmp_path / "typo.yaml", records, tmp_path / "first" / "final", tmp_path / "b", steps=0)
    assert main(["train", str(first), str(typo)]) == 2
    assert "typo.yaml: steps 0 trains nothing" in capsys.readouterr().err and not (tmp_path / "first").exists()
    assert main(["train", str(first), str(first), "out=runs/x"]) == 2
    assert "out=runs/x would apply to each of the 2 stages" in capsys.readouterr().err
    assert main(["train", "steps=3"]) == 2
    assert "no config before the overrides steps=3" in capsys.readouterr().err
