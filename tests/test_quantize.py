"""Weight-only int8 / int4 quantization of the LLM and the vision tower (`load_model(quantize=...)`, `--quantize`)."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import skyeye.model.loading
from skyeye.cli import build_parser, main
from skyeye.model.checkpoint import CheckpointError
from skyeye.model.loading import load_model
from skyeye.model.quantize import Int4Linear, Int8Linear, check_quantization, quantize_model

from conftest import small_config

LAYER_CLASS = {"int8": Int8Linear, "int4": Int4Linear}
BITS = {"int8": 8, "int4": 4}


def _levels(weight: torch.Tensor, kind: str, group_size: int) -> torch.Tensor:
    """The distance between two neighbouring integer levels, per weight: per row for int8 (symmetric, 255
    levels), per group of inputs for int4 (from the group's minimum to its maximum in 16 levels)."""
    if kind == "int8":
        return (weight.abs().amax(dim=1, keepdim=True) / 127).expand_as(weight)
    groups = weight.reshape(weight.shape[0], -1, group_size)
    span = groups.amax(-1, keepdim=True) - groups.amin(-1, keepdim=True)
    return (span / 15).expand_as(groups).reshape(weight.shape)


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_quantized_layer_stores_integers_and_computes_with_weights_within_one_level(kind):
    torch.manual_seed(0)
    linear = nn.Linear(256, 64)
    layer = Int8Linear(linear) if kind == "int8" else Int4Linear(linear, group_size=128)
    # The real storage: one byte per int8 weight, two int4 weights per byte; no float copy kept.
    assert not layer.weight.is_floating_point()
    assert layer.weight.untyped_storage().nbytes() == 256 * 64 * BITS[kind] // 8
    # Fed the identity, the layer gives back the weights it computes with (plus the bias).
    with torch.no_grad():
        computed = (layer(torch.eye(256)) - linear.bias).t()
        expected = linear.weight
    # Rounding to the nearest level is off by at most half a level; scales, zero points and the output
    # in bfloat16 add less than another half. A wrong scale, zero point or layout is off by whole weights.
    assert ((computed - expected).abs() <= _levels(expected, kind, group_size=128)).all()
    assert (computed - expected).abs().max() > 0, "the weights are quantized, not kept"


def _logits(model, image) -> torch.Tensor:
    from skyeye.model.inputs import collate, encode
    from skyeye.prompts import Conversation

    segments = Conversation().ask("[vqa] What is in the image?").segments(model.cfg.prompt_style)
    batch = collate([encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image)], 0)
    pixels = model.cfg.vision.to_pixels([image])
    with torch.no_grad():
        return model(batch["input_ids"], batch["image_mask"], batch["attention_mask"], pixels=pixels).logits


def _centred(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(-1, keepdim=True)  # a shift of all logits changes no probability


# Random tiny models have near-ties between tokens, so their greedy answers may differ by nature; the logits
# are compared instead. Each quantized layer's relative error is about 0.5% (int8) or 7% (int4, 16 levels)
# for these weights; through the whole LLM the logits moved by 0.6% and 8% when measured. A wrong scale,
# layout or a LoRA left out moves them by tens of percent.
LOGIT_TOLERANCE = {"int8": 0.02, "int4": 0.2}


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_quantized_load_keeps_the_logits_and_stores_the_llm_layers_as_integers(kind, lora_checkpoint):
    plain, quantized = load_model(lora_checkpoint, merge_lora=True), load_model(lora_checkpoint, quantize=kind)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    reference, logits = _centred(_logits(plain, image)), _centred(_logits(quantized, image))
    assert (logits - reference).norm() / reference.norm() < LOGIT_TOLERANCE[kind]
    llm_layers = quantized.llama_model.model.layers
    linears = [module for module in llm_layers.modules() if isinstance(module, (nn.Linear, LAYER_CLASS[kind]))]
    assert linears and all(isinstance(module, LAYER_CLASS[kind]) for module in linears)
    float_tensors = [name for name, tensor in llm_layers.state_dict().items() if tensor.is_floating_point()]
    assert all("norm" in name or "scale" in name for name in float_tensors), "no float copy of a weight is left"
    float_bytes = sum(m.in_features * m.out_features * 4 for m in linears)
    integer_bytes = sum(m.weight.untyped_storage().nbytes() for m in linears)
    assert integer_bytes == float_bytes * BITS[kind] // 32
    # The output layer, the embeddings and the alignment layer keep the model's dtype.
    assert quantized.llama_model.get_output_embeddings().weight.dtype == torch.float32
    assert quantized.llama_model.get_input_embeddings().weight.dtype == torch.float32
    assert quantized.llama_proj.weight.dtype == torch.float32


def test_int4_keeps_the_layers_its_kernel_cannot_take_and_says_how_many(tokenizer, caplog):
    from skyeye.model.skyeye import SkyEye

    cfg = small_config()
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, intermediate_size=48))  # 48 inputs: no group
    model = quantize_model(SkyEye(cfg, tokenizer).eval(), "int4")
    kept = [layer.mlp.down_proj for layer in model.llama_model.model.layers]
    assert all(type(linear) is nn.Linear for linear in kept)
    assert isinstance(model.llama_model.model.layers[0].mlp.up_proj, Int4Linear)
    assert f"2 of {7 * cfg.llm.num_layers} LLM Linear layers kept in torch.float32" in caplog.text


def test_a_quantized_model_refuses_to_train_or_to_be_saved(small_model, tmp_path):
    model = quantize_model(small_model, "int8")
    with pytest.raises(ValueError, match="quantized to int8 for inference and cannot train"):
        model.train()
    with pytest.raises(CheckpointError, match="quantized to int8 for inference"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_an_unknown_or_unsupported_quantization_is_refused_before_the_model_is_read(tmp_path):
    with pytest.raises(ValueError, match="quantize 'int3': not one of int8, int4"):
        load_model(tmp_path / "no-such-model", quantize="int3")
    with pytest.raises(ValueError, match="int4 runs on CPU only"):
        check_quantization("int4", torch.device("cuda"))


def test_every_command_that_answers_takes_quantize_and_passes_it_to_the_loader(tmp_path, monkeypatch, capsys):
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("ask", "chat", "web", "serve", "eval", "map"):
        assert "--quantize" in commands[name]._option_string_actions, name
    asked = {}

    def load(source, **options):
        asked.update(options)
        raise ValueError("stopped before loading")

    monkeypatch.setattr(skyeye.model.loading, "load_model", load)
    image = tmp_path / "scene.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["ask", str(image), "what is it?", "--quantize", "int8"]) == 2
    assert asked["quantize"] == "int8"


@pytest.mark.parametrize("native_bfloat16", [False, True])
def test_the_tower_takes_int8_only_on_a_cpu_without_bfloat16_instructions(small_model, monkeypatch, native_bfloat16):
    # Where bfloat16 is native (AMX), the int8 kernel ran the EVA-g tower 4.9x slower; without it, 2.4x faster.
    monkeypatch.setattr("skyeye.model.loading.cpu_computes_bfloat16", lambda: native_bfloat16)
    model = quantize_model(small_model, "int8")
    tower_layers = [m for m in model.visual_encoder.modules() if isinstance(m, (nn.Linear, Int8Linear))]
    assert tower_layers
    assert all(isinstance(m, nn.Linear if native_bfloat16 else Int8Linear) for m in tower_layers)
