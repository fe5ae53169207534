"""The tower phase of training: labels from answers, learning, and the hand-over to instruction tuning."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from skyeye.data.record import Record
from skyeye.data.shards import ShardWriter
from skyeye.train.config import AugmentConfig, TrainConfig
from skyeye.train.loop import Trainer
from skyeye.train.tower import augmented

from conftest import PhaseRuns, small_conv_config

COLOURS = {"red farmland": (200, 40, 40), "blue lake": (40, 40, 200)}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Red and blue noisy images answered by their colour's scene, plus captions for the second phase."""
    folder = tmp_path_factory.mktemp("scenes")
    (folder / "imgs").mkdir()
    rng = np.random.default_rng(0)
    with ShardWriter(folder) as writer:
        for i in range(24):
            split = "val" if i >= 20 else "train"
            name = list(COLOURS)[i % 2]
            pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"imgs/{i}.png")
            for source, user, answer in (("scene", "[vqa] what is the theme of this picture?", name),
                                         ("captions", "[caption] Describe.", f"a {name}")):  # fmt: skip
                writer.write(f"x-{split}", Record(f"{source}/{i}", source, split, "vqa", [f"imgs/{i}.png"],
                                                  [40, 40], [{"user": user, "assistant": answer}]))  # fmt: skip
    return folder


def test_tower_learns_the_answers_then_hands_over_to_instruction_tuning(scenes, tmp_path):
    model_yaml = tmp_path / "model.yaml"
    small_conv_config().to_yaml(model_yaml)
    spec = {"records": str(scenes), "root": str(scenes)}
    train_cfg = TrainConfig.from_dict({
        "model": str(model_yaml), "out": str(tmp_path / "run"), "steps": 2, "batch_size": 4,
        "trainable": ["alignment", "llm"], "data": [{**spec, "sources": ["captions"]}],
        "tower": {"data": [{**spec, "sources": ["scene"]}], "epochs": 8, "batch_size": 4, "lr": 1e-2, "eval_every": 8},
    }, "test")  # fmt: skip

    trainer = Trainer(train_cfg, progress=False)
    report = json.loads((tmp_path / "run" / "tower" / "tower.json").read_text())
    assert report["classes"] == sorted(COLOURS) and report["train_images"] == 20
    assert report["history"][-1]["val_accuracy"] == 1.0
    tower = load_file(str(tmp_path / "run" / "tower" / "tower.safetensors"))
    assert all(torch.equal(tower[k], v) for k, v in trainer.model.visual_encoder.state_dict().items())
    assert not any(p.requires_grad for p in trainer.model.visual_encoder.parameters())

    final = trainer.run()
    saved = load_file(str(final / "model.safetensors"))
    assert all(torch.equal(tower[k], saved[f"visual_encoder.{k}"]) for k in tower), "the frozen tower changed"


def test_a_killed_tower_phase_resumes_where_it_stopped(scenes, tmp_path, tokenizer, monkeypatch):
    from skyeye.model.skyeye import SkyEye
    from skyeye.train import tower
    from skyeye.train.config import DataSpec, TowerConfig

    spec = DataSpec(records=str(scenes), root=str(scenes), sources=["scene"])
    phase = TowerConfig(data=[spec], epochs=4, batch_size=4, lr=1e-2, eval_every=2, save_every=2)  # 5 steps/epoch

    def start(out: Path):
        model = SkyEye(small_conv_config(), tokenizer)
        return model, tower.pretrain_tower(model, phase, out, seed=0, progress=False)

    run = PhaseRuns(monkeypatch, tower, start)
    straight, straight_report = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_at=13)  # in epoch 3, after the checkpoint of epoch 2
    resumed, resumed_report = run(tmp_path / "killed")
    assert run.calls == 10, "the resumed phase did not start at epoch 3"
    assert resumed_report == straight_report
    expected = straight.visual_encoder.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.visual_encoder.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["tower.json", "tower.safetensors"]

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "damaged", kill_at=13)
    saved = next((tmp_path / "damaged").rglob("classifier.safetensors"))
    saved.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{saved}: not a readable safetensors file, truncated or damaged"):
        run(tmp_path / "damaged")


def test_augmented_views_are_seeded_crops_flips_and_quarter_turns():
    batch = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).to(torch.uint8)
    whole = AugmentConfig(flip=True, rotate=True, crop_scale=1.0)
    views = augmented(batch, whole, torch.Generator().manual_seed(0))
    again = augmented(batch, whole, torch.Generator().manual_seed(0))
    assert torch.equal(views, again)
    for view, image in zip(views, batch.float() / 255, strict=True):
        dihedral = [torch.rot90(v, k, (-2, -1)) for v in (image, image.flip(-1)) for k in range(4)]
        assert any(torch.equal(view, d) for d in dihedral)
    plain = augmented(batch, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(plain, batch.float() / 255)


def test_a_conv_tower_can_learn_at_a_smaller_size_than_it_answers_at(scenes, tmp_path, monkeypatch):
    from skyeye.train import tower

    model_yaml = tmp_path / "model.yaml"
    small_conv_config(image_size=64).to_yaml(model_yaml)
    seen = []
    real = tower.augmented
    monkeypatch.setattr(tower, "augmented", lambda batch, *a: seen.append(batch.shape[-1]) or real(batch, *a))
    spec = {"records": str(scenes), "root": str(scenes), "sources": ["scene"]}
    train_cfg = TrainConfig.from_dict({
        "model": str(model_yaml), "out": str(tmp_path / "run"), "steps": 1, "batch_size": 4, "data": [spec],
        "tower": {"data": [spec], "epochs": 8, "batch_size": 4, "lr": 1e-2, "eval_every": 8, "image_size": 32},
    }, "test")  # fmt: skip
    Trainer(train_cfg, progress=False)
    report = json.loads((tmp_path / "run" / "tower" / "tower.json").read_text())
    assert set(seen) == {32} and report["history"][-1]["val_accuracy"] == 1.0
