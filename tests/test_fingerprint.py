"""A model's fingerprint follows its weights, architecture and tokenizer, not where they were loaded from."""

import copy

import torch

from skyeye.model.fingerprint import SAMPLES_PER_TENSOR, model_fingerprint
from skyeye.model.loading import load_model


def test_the_same_weights_from_another_folder_or_prompt_style_give_the_same_fingerprint(small_model, tmp_path):
    fingerprint = model_fingerprint(small_model)
    copy = load_model(small_model.save_pretrained(tmp_path / "elsewhere"), prompt_style="minigptv2")
    assert model_fingerprint(copy) == fingerprint  # the prompt style is recorded on its own


def test_training_a_lora_tensor_or_changing_the_dtype_changes_the_fingerprint(small_model):
    fingerprint = model_fingerprint(small_model)
    lora = next(param for name, param in small_model.named_parameters() if "lora_B" in name)
    with torch.no_grad():
        lora.add_(1e-3)
    trained = model_fingerprint(small_model)
    assert trained != fingerprint
    assert model_fingerprint(small_model.to_dtype(torch.bfloat16)) not in (fingerprint, trained)


def test_a_change_to_the_architecture_or_tokenizer_changes_the_fingerprint(small_model):
    fingerprint = model_fingerprint(small_model)
    small_model.cfg.llm.rope_theta = 500000.0  # no tensor shows it, yet every answer changes
    assert model_fingerprint(small_model) != fingerprint
    small_model.cfg.llm.rope_theta = 10000.0
    assert model_fingerprint(small_model) == fingerprint
    small_model.tokenizer = copy.deepcopy(small_model.tokenizer)  # the fixture's tokenizer is shared
    small_model.tokenizer.add_tokens(["<extra>"])
    assert model_fingerprint(small_model) != fingerprint


def test_each_tensor_is_read_at_evenly_spaced_positions_only(small_model):
    largest = max(small_model.state_dict().values(), key=torch.Tensor.numel)
    assert largest.numel() > 10 * SAMPLES_PER_TENSOR
    fingerprint = model_fingerprint(small_model)
    with torch.no_grad():
        largest.view(-1)[1] += 1.0  # between the first two positions read: unseen, the price of not reading 14 GB
        assert model_fingerprint(small_model) == fingerprint
        largest.view(-1)[-1] += 1.0  # the last element is always read
        assert model_fingerprint(small_model) != fingerprint
