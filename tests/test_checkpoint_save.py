"""Saving a checkpoint folder: whole or not at all, and never over someone else's files."""

import pytest
import safetensors.torch
import torch

from skyeye.model.checkpoint import CheckpointError
from skyeye.model.loading import load_model


def _killed_while_writing_weights(monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(safetensors.torch, "save_file", killed)


def test_a_killed_save_leaves_no_half_folder(small_model, tmp_path, monkeypatch):
    _killed_while_writing_weights(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        small_model.save_pretrained(tmp_path / "final")
    assert not (tmp_path / "final").exists(), "a killed save left a half-written folder in place"


def test_a_killed_save_over_a_checkpoint_keeps_the_old_one_whole(small_model, tmp_path, monkeypatch):
    folder = small_model.save_pretrained(tmp_path / "final")
    before = load_model(folder).state_dict()
    with torch.no_grad():
        small_model.llama_proj.weight.add_(1)
    _killed_while_writing_weights(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        small_model.save_pretrained(folder)
    after = load_model(folder).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_saving_again_replaces_the_checkpoint_and_leaves_nothing_beside_it(small_model, tmp_path):
    folder = small_model.save_pretrained(tmp_path / "final")
    with torch.no_grad():
        small_model.llama_proj.weight.add_(1)
    small_model.save_pretrained(folder)
    assert torch.equal(load_model(folder).llama_proj.weight, small_model.llama_proj.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_saving_into_a_folder_with_other_files_is_refused_and_keeps_them(small_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=rf"{tmp_path}: .*notes\.txt"):
        small_model.save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
