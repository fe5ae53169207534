"""Self-critical caption training (train/self_critical.py): its policy-gradient step, its phase in a stage of steps 0
(what learns, what is saved, a killed run resuming) and the config checks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from skyeye.data.record import Record
from skyeye.data.shards import ShardWriter
from skyeye.settings import ConfigError
from skyeye.train import self_critical as phase
from skyeye.train.config import DataSpec, SelfCriticalConfig, TrainConfig

from conftest import PhaseRuns, small_conv_config

SIDE = 32
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """Plain coloured images with three caption records each, as a captioning set's records are."""
    folder = tmp_path_factory.mktemp("captioned")
    (folder / "imgs").mkdir()
    rng = np.random.default_rng(0)
    with ShardWriter(folder) as writer:
        for i in range(12):
            split = "val" if i >= 9 else "train"
            colour = list(COLOURS)[i % 3]
            pixels = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 10, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"imgs/{i}.png")
            for n, text in enumerate(
                [f"a {colour} field .", f"this is a {colour} field .", f"a plain {colour} area ."]
            ):
                turn = {"user": "[caption] Briefly describe this image.", "assistant": text}
                record = Record(f"{i}#{n}", "fields", split, "caption", [f"imgs/{i}.png"], [SIDE, SIDE], [turn])
                writer.write(f"x-{split}", record)
    return folder


def settings(records: Path, **changes) -> SelfCriticalConfig:
    spec = DataSpec(records=str(records), root=str(records))
    return SelfCriticalConfig(**{"data": [spec], "epochs": 2, "batch_size": 3, "samples": 3, "lr": 1e-3,
                                 "max_new_tokens": 6, **changes})  # fmt: skip


def sequence_log_prob(learner, batch, features, tokens) -> float:
    with torch.no_grad():
        log_probs, mask = learner.log_probs(batch, features, tokens)
    return float((log_probs * mask).sum())


def test_a_step_raises_the_probability_of_the_sample_that_scored_best(tokenizer):
    """With the references set to one caption the model itself samples, that sample scores 1 and its siblings
    little: one step must make it more likely, and the ones that scored below the mean less likely."""
    from skyeye.model.skyeye import SkyEye

    torch.manual_seed(0)
    model = SkyEye(small_conv_config(), tokenizer)
    model.set_trainable(["alignment", "lora"])
    learner = phase.SelfCritical(model, settings(Path("."), samples=4, max_new_tokens=8, lr=1e-2))
    batch = phase.prompt_batch(model, ["[caption] Briefly describe this image."])
    features = learner.features(torch.rand(1, 3, SIDE, SIDE))
    torch.manual_seed(1)
    repeated = {name: value.repeat_interleave(4, 0) for name, value in batch.items()}
    sampled = learner.generate(repeated, features.repeat_interleave(4, 0), do_sample=True, top_k=0)
    texts = learner.decode(sampled)
    target = max(range(4), key=lambda i: len(set(texts[i].split())))
    assert len(texts[target].split()) >= 4, "the stand-in needs a sample of 4 words at least"
    before = sequence_log_prob(learner, batch, features, sampled[target : target + 1])

    torch.manual_seed(1)  # the step samples the same four captions again
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss, reward = learner.loss(batch, features, [[texts[target]]])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert sequence_log_prob(learner, batch, features, sampled[target : target + 1]) > before
    assert reward == pytest.approx(float(phase.bleu4(texts, [[texts[target]]] * 4)[1].mean()), abs=1e-6)


def test_a_stage_of_steps_0_tunes_the_decoder_and_keeps_the_tower(captioned, tmp_path, monkeypatch):
    from skyeye.model.loading import load_model
    from skyeye.train.loop import train

    model_yaml = tmp_path / "model.yaml"
    small_conv_config().to_yaml(model_yaml)
    raw = {"data": [{"records": str(captioned), "root": str(captioned)}], "epochs": 2, "batch_size": 3,
           "samples": 3, "lr": 1e-3, "max_new_tokens": 6}  # fmt: skip
    stage = TrainConfig.from_dict({"model": str(model_yaml), "out": str(tmp_path / "run"), "steps": 0,
                                   "self_critical": raw}, "test")  # fmt: skip
    final = train(stage, progress=False)

    report = json.loads((tmp_path / "run" / "self-critical" / "self_critical.json").read_text())
    assert report["train_images"] == 9 and report["val_images"] == 3
    assert report["parts"] == ["alignment", "lora"]  # what the model config trains, but its tower
    assert [sorted(e) for e in report["history"]] == [["epoch", "mean_sample_bleu4", "val_bleu4"]] * 2
    tuned, untouched = load_model(final).state_dict(), load_model(model_yaml).state_dict()
    changed = {k for k, v in tuned.items() if not torch.equal(v, untouched[k])}
    assert changed and all("lora_" in k or k.startswith("llama_proj.") for k in changed)
    saved = load_file(str(tmp_path / "run" / "self-critical" / "decoder.safetensors"))
    assert not any(k.startswith(("visual_encoder.", "ln_vision.")) for k in saved)
    assert all(torch.equal(v, tuned[k]) for k, v in saved.items())

    # Run again: the finished phase is loaded, not trained again, and the same model is written.
    monkeypatch.setattr(phase, "augmented", lambda *a: pytest.fail("the finished phase trained again"))
    again = load_file(str(train(stage, progress=False) / "model.safetensors"))
    first = load_file(str(final / "model.safetensors"))
    assert again.keys() == first.keys() and all(torch.equal(again[k], v) for k, v in first.items())


def test_a_killed_self_critical_phase_resumes_where_it_stopped(captioned, tmp_path, tokenizer, monkeypatch):
    from skyeye.model.skyeye import SkyEye

    cfg = settings(captioned, epochs=3)  # 3 steps an epoch, a checkpoint after each

    def start(out: Path):
        model = SkyEye(small_conv_config(), tokenizer)
        return model, phase.train_self_critical(model, cfg, out, seed=0, progress=False)

    run = PhaseRuns(monkeypatch, phase, start)
    straight, straight_report = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_at=8)  # in epoch 3, after the checkpoint of epoch 2
    resumed, resumed_report = run(tmp_path / "killed")
    assert run.calls == 3, "the resumed phase did not start at epoch 3"
    assert resumed_report == straight_report
    expected = straight.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["decoder.safetensors", "self_critical.json"]


def test_records_that_are_not_single_captions_are_refused_by_name(tmp_path, tokenizer):
    from skyeye.model.skyeye import SkyEye

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (SIDE, SIDE)).save(tmp_path / "imgs/0.png")
    turns = [{"user": "[caption] Describe it.", "assistant": "a field ."}, {"user": "And?", "assistant": "grass ."}]
    with ShardWriter(tmp_path) as writer:
        writer.write("x-train", Record("chat-7", "fields", "train", "caption", ["imgs/0.png"], [SIDE, SIDE], turns))
    model = SkyEye(small_conv_config(), tokenizer)
    with pytest.raises(ConfigError, match="chat-7: self_critical needs caption records of one image and one turn"):
        phase.train_self_critical(model, settings(tmp_path), tmp_path / "out", seed=0, progress=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 10, "data": [{"records": "x"}]}, "self_critical tunes a trained decoder"),
        ({"self_critical": {"data": [{"records": "x"}], "samples": 1}}, "self_critical.samples must be >= 2"),
        ({"self_critical": {"data": [{"records": "x"}], "epochs": 0}}, "self_critical.epochs must be >= 1"),
        ({"self_critical": {"data": [{"records": "x"}], "lr": 0}}, "self_critical.lr must be > 0"),
        ({"self_critical": {"data": [{"records": "x"}], "xe_weight": -1}}, "self_critical.xe_weight must be >= 0"),
    ],
)
def test_self_critical_settings_are_checked(changes, message):
    config = {"model": "tiny", "steps": 0, "self_critical": {"data": [{"records": "x"}]}, **changes}
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(config, "stage.yaml")


def test_xe_weight_adds_the_cross_entropy_of_the_asked_captions(tokenizer):
    from skyeye.model.skyeye import SkyEye

    torch.manual_seed(0)
    model = SkyEye(small_conv_config(), tokenizer)
    model.set_trainable(["alignment", "lora"])
    questions = ["[caption] Briefly describe this image.", "[caption] Describe this image in one sentence."]
    answers = ["a red field .", "this is a blue field ."]
    batch = phase.prompt_batch(model, questions)
    captions = phase.caption_batch(model, questions, answers)
    assert int((captions["labels"] != -100).sum()) == sum(
        len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers
    ), "only the captions and their end tokens are learned"
    features = phase.SelfCritical(model, settings(Path("."))).features(torch.rand(2, 3, SIDE, SIDE))
    references = [[phase.words(a)] for a in answers]
    losses = {}
    for weight in (0.0, 0.5):
        learner = phase.SelfCritical(model, settings(Path("."), xe_weight=weight))
        torch.manual_seed(3)  # the same samples for both
        losses[weight], _ = learner.loss(batch, features, references, captions)
    cross_entropy = model(**captions, features=features).loss.item()
    assert (losses[0.5] - losses[0.0]).item() == pytest.approx(0.5 * cross_entropy, rel=1e-4)
