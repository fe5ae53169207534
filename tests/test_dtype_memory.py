"""Models run in the dtype the device is fast at, and loading or building one peaks near the weights' size."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skyeye.model.config import LLMConfig, VisionConfig
from skyeye.model.loading import compute_dtype, load_model

from conftest import small_config

# Peak RSS is read from /proc (VmHWM, reset through clear_refs): Linux only.
needs_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")

# Run in a fresh interpreter: everything the load imports is imported and warmed first, then the peak is reset,
# so the figure printed is (peak RSS during the load - RSS before it) / bytes of the loaded model's tensors.
PEAK_OF_LOAD = """
import sys, torch
from skyeye.model.loading import load_model
from skyeye.model.release import load_llama
load_model("tiny")  # imports and first-use allocations, not what is measured
def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
kind, source, dtype = sys.argv[1:]
if kind == "llama":
    model = load_llama(source, getattr(torch, dtype))[0]
else:
    model = load_model(source, dtype=None if dtype == "-" else dtype)
weights = sum(t.nbytes for t in model.state_dict().values())
print(str(model.dtype).removeprefix("torch."), (status("VmHWM:") - before) / weights)
"""


def _peak_ratio(source: Path, dtype: str | None = None, kind: str = "model") -> tuple[str, float]:
    command = [sys.executable, "-c", PEAK_OF_LOAD, kind, str(source), dtype or "-"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    dtype_name, ratio = run.stdout.split()[-2:]
    return dtype_name, float(ratio)


def _mid_config(dtype: str):
    """About 60M parameters: large enough that a second copy of the weights dwarfs allocator noise."""
    llm = LLMConfig(vocab_size=2048, hidden_size=1024, intermediate_size=2048, num_layers=5, num_heads=8)
    llm.num_kv_heads = llm.num_heads
    return small_config(
        vision=VisionConfig(image_size=56, patch_size=14, width=64, depth=2, heads=2, mlp_dim=128),
        llm=llm,
        tokenizer="bundled:tokenizer-tiny",
        dtype=dtype,
    )


def test_half_precision_follows_what_the_device_is_fast_at():
    cpu = torch.device("cpu")
    assert compute_dtype("float16", cpu) == "bfloat16"  # CPUs emulate float16
    assert compute_dtype("float16", cpu, requested="float16") == "float16"  # an explicit choice wins
    assert compute_dtype("float32", cpu) == "float32" and compute_dtype("bfloat16", cpu) == "bfloat16"


def test_a_float16_checkpoint_runs_in_bfloat16_on_a_cpu_with_learning_parts_float32(small_model, tmp_path):
    small_model.cfg.dtype = "float16"
    small_model.to_dtype(torch.float16).save_pretrained(tmp_path / "half")
    model = load_model(tmp_path / "half")
    assert model.cfg.dtype == "bfloat16" and model.dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert load_model(tmp_path / "half", dtype="float16").dtype == torch.float16


@needs_proc
def test_a_preset_is_built_in_its_dtype_without_a_float32_copy(tmp_path):
    config = tmp_path / "mid.yaml"
    _mid_config("bfloat16").to_yaml(config)
    dtype, ratio = _peak_ratio(config)
    assert dtype == "bfloat16"
    assert ratio < 1.3, f"building peaked at {ratio:.2f}x the weights"


@needs_proc
@pytest.mark.parametrize("saved, loaded", [("float32", "bfloat16"), ("bfloat16", "float32")])
def test_loading_converts_tensor_by_tensor_so_memory_stays_near_the_weights(tokenizer, tmp_path, saved, loaded):
    from skyeye.model.skyeye import SkyEye

    with torch.device("meta"):  # shapes only: the folder's values do not matter here, only their bytes
        model = SkyEye(_mid_config(saved), tokenizer).to_dtype(getattr(torch, saved))
    model.to_empty(device="cpu")
    for tensor in model.state_dict().values():
        tensor.zero_()
    model.save_pretrained(tmp_path / "mid")
    del model
    dtype, ratio = _peak_ratio(tmp_path / "mid", loaded)
    assert dtype == (loaded or saved)
    assert ratio < 1.3, f"loading {saved} as {dtype} peaked at {ratio:.2f}x the weights"


@needs_proc
def test_a_llama_folder_is_converted_tensor_by_tensor_too(tokenizer, tmp_path):
    from transformers import LlamaForCausalLM

    from skyeye.model.skyeye import llama_config

    with torch.device("meta"):
        llama = LlamaForCausalLM(llama_config(_mid_config("float32")))
    llama.to_empty(device="cpu")
    for tensor in llama.state_dict().values():
        tensor.zero_()
    llama.save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    del llama
    dtype, ratio = _peak_ratio(tmp_path / "llama", "bfloat16", kind="llama")
    assert dtype == "bfloat16"
    assert ratio < 1.3, f"loading a float32 LLaMA folder as bfloat16 peaked at {ratio:.2f}x the weights"


def test_the_bundled_conv_model_answers_in_bfloat16():
    """Its batch-norm layers learn (trainable: vision), so their parameters stay float32; their running statistics
    must too, or batch norm fails on mixed dtypes."""
    from PIL import Image

    from skyeye.model.answer import ask_many
    from skyeye.model.loading import bundled_model, load_model

    model = load_model(bundled_model(), dtype="bfloat16")
    (answer,) = ask_many(model, [Image.new("RGB", (64, 64), "green")], ["[caption] Briefly describe this image."])
    assert answer.text
