"""Damaged weights give one-line errors that name the file and the tensor, never a traceback or a silent ""."""

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from skyeye.cli import main

BIAS = "llama_proj.bias"
LAYER = "llama_model.model.layers.0.mlp.down_proj.weight"


@pytest.fixture
def folder(small_model, tmp_path):
    return small_model.save_pretrained(tmp_path / "ckpt")


@pytest.fixture
def image(tmp_path):
    Image.new("RGB", (40, 30), (90, 140, 60)).save(tmp_path / "scene.png")
    return tmp_path / "scene.png"


def _ask(model, image, capsys) -> str:
    """The one error line `skyeye ask` prints (and fails with)."""
    assert main(["ask", str(image), "what is it?", "--model", str(model), "--max-new-tokens", "2"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("skyeye: error: ") and "\n" not in err, err
    return err


def _edit(folder, **changes):
    weights = folder / "model.safetensors"
    state = load_file(weights)
    state.update(changes)
    save_file(state, weights)
    return weights


def test_a_wrong_shape_names_the_file_the_tensor_and_both_shapes(folder, image, capsys):
    weights = _edit(folder, **{BIAS: torch.zeros(7)})
    err = _ask(folder, image, capsys)
    assert str(weights) in err and f"{BIAS} has shape (7,)" in err and "(64,)" in err


def test_an_integer_tensor_where_the_model_holds_floats_is_named(folder, image, capsys):
    weights = _edit(folder, **{LAYER: torch.ones(64, 128, dtype=torch.int32)})
    err = _ask(folder, image, capsys)
    assert str(weights) in err and LAYER in err and "int32" in err


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_safetensors_file_is_named(folder, image, capsys, damage):
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 8, "empty": b""}[damage])
    err = _ask(folder, image, capsys)
    assert str(weights) in err and "safetensors" in err


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_named_instead_of_answering_nothing(small_model, folder, image, capsys, value):
    spoiled = small_model.state_dict()[LAYER].clone()
    spoiled[3, 5] = value
    weights = _edit(folder, **{LAYER: spoiled})
    err = _ask(folder, image, capsys)
    assert str(weights) in err and LAYER in err and "NaN or infinite" in err


def test_a_model_whose_output_overflows_says_so(small_model, image):
    with torch.no_grad():
        small_model.llama_model.model.norm.weight.mul_(1e25)
        small_model.llama_model.lm_head.weight.mul_(1e25)
    with pytest.raises(ValueError, match=r"not finite.*every weight is finite.*float32"):
        small_model.ask(Image.open(image), "what is it?", max_new_tokens=2)


def test_finite_weights_load_and_answer_after_the_check(folder, image, capsys):
    assert main(["ask", str(image), "what is it?", "--model", str(folder), "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().err == ""
