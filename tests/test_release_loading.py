"""Loading synthesized SkyEyeGPT / MiniGPT-v2 / EVA-CLIP / LLaMA files with the real key names."""

import argparse

import pytest
import torch
import torch.nn.functional as F

from skyeye.cli import main
from skyeye.model.checkpoint import CheckpointError
from skyeye.model.loading import load_model
from skyeye.model.release import load_release

from conftest import small_config

CFG = small_config()
V, L = CFG.vision, CFG.llm


def _eva_state(depth: int = V.depth + 1) -> dict[str, torch.Tensor]:
    """An EVA-CLIP file at 224 px (16x16 + 1 positions), one block more than the model uses, and a head."""
    g = torch.Generator().manual_seed(1)
    w, m = V.width, V.mlp_dim
    state = {
        "cls_token": torch.randn(1, 1, w, generator=g),
        "pos_embed": torch.randn(1, 257, w, generator=g),
        "patch_embed.proj.weight": torch.randn(w, 3, 14, 14, generator=g),
        "patch_embed.proj.bias": torch.randn(w, generator=g),
        "norm.weight": torch.ones(w),
        "norm.bias": torch.zeros(w),
        "head.weight": torch.randn(10, w),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        for name, shape in {
            "norm1.weight": (w,),
            "norm1.bias": (w,),
            "attn.q_bias": (w,),
            "attn.v_bias": (w,),
            "attn.qkv.weight": (3 * w, w),
            "attn.proj.weight": (w, w),
            "attn.proj.bias": (w,),
            "norm2.weight": (w,),
            "norm2.bias": (w,),
            "mlp.fc1.weight": (m, w),
            "mlp.fc1.bias": (m,),
            "mlp.fc2.weight": (w, m),
            "mlp.fc2.bias": (w,),
        }.items():
            state[b + name] = torch.randn(*shape, generator=g) * 0.1
    return state


def _release_state(new_peft: bool = False, alignment_lora: bool = False, r: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    suffix = ".default.weight" if new_peft else ".weight"
    h, d = L.hidden_size, V.width * CFG.merge_tokens
    state = {"llama_proj.weight": torch.randn(h, d, generator=g), "llama_proj.bias": torch.randn(h, generator=g)}
    for i in range(L.num_layers):
        for proj in ("q_proj", "v_proj"):
            key = f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}"
            state[f"{key}.lora_A{suffix}"] = torch.randn(r, h, generator=g)
            state[f"{key}.lora_B{suffix}"] = torch.randn(h, r, generator=g)
    if alignment_lora:
        state["llama_proj.lora_A.weight"] = torch.randn(r, d, generator=g)
        state["llama_proj.lora_B.weight"] = torch.randn(h, r, generator=g)
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer):
    from skyeye.model.skyeye import llama_config

    root = tmp_path_factory.mktemp("release")
    torch.save(_eva_state(), root / "eva_vit_g.pth")
    torch.manual_seed(3)
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM(llama_config(CFG))
    llama.save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    torch.save({"model": _release_state()}, root / "skyeyegpt.pth")
    return root, llama.state_dict()


def _load(root, name="skyeyegpt.pth", **kwargs):
    return load_release(root / name if name else None, root / "eva_vit_g.pth", root / "llama", cfg=CFG, **kwargs)


def test_every_tensor_lands_where_it_belongs(files):
    root, llama_state = files
    model = _load(root)
    eva, release = _eva_state(), _release_state()
    tower = model.visual_encoder.state_dict()
    for key in tower:
        if key != "pos_embed":
            assert torch.equal(tower[key], eva[key]), key
    grid = eva["pos_embed"][:, 1:].reshape(1, 16, 16, V.width).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    assert torch.equal(tower["pos_embed"][:, :1], eva["pos_embed"][:, :1]), "CLS position kept"
    assert torch.allclose(tower["pos_embed"][0, 1:], resized.permute(0, 2, 3, 1).reshape(16, V.width), atol=1e-6)
    assert torch.equal(model.llama_proj.weight, release["llama_proj.weight"])
    lora = model.llama_model.model.layers[1].self_attn.v_proj
    assert torch.equal(
        lora.lora_A["default"].weight,
        release["llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"],
    )
    assert torch.equal(lora.base_layer.weight, llama_state["model.layers.1.self_attn.v_proj.weight"])
    assert torch.equal(model.llama_model.lm_head.weight, llama_state["lm_head.weight"])
    assert torch.equal(model.ln_vision.weight, torch.ones(V.width)), "MiniGPT-v2 never trains ln_vision"


def test_both_peft_spellings_load_the_same_weights(files, tmp_path):
    root, _ = files
    torch.save({"model": _release_state(new_peft=True)}, root / "new_peft.pth")
    old, new = _load(root).state_dict(), _load(root, "new_peft.pth").state_dict()
    assert old.keys() == new.keys()
    assert all(torch.equal(old[k], new[k]) for k in old)


@pytest.mark.parametrize("new_peft", [False, True])
def test_the_lora_rank_is_read_from_the_checkpoint(files, new_peft):
    root, _ = files
    state = _release_state(new_peft=new_peft, r=8)
    torch.save({"model": state}, root / "rank8.pth")
    model = _load(root, "rank8.pth")
    assert model.cfg.lora.r == 8 != CFG.lora.r
    assert model.llama_model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.shape == (8, L.hidden_size)


def test_alignment_lora_is_detected_and_loaded(files):
    root, _ = files
    state = _release_state(alignment_lora=True)
    torch.save({"model": state}, root / "aligned.pth")
    model = _load(root, "aligned.pth")
    assert model.cfg.lora.on_alignment
    assert torch.equal(model.llama_proj.lora_A["default"].weight, state["llama_proj.lora_A.weight"])
    assert torch.equal(model.llama_proj.base_layer.weight, state["llama_proj.weight"])


def test_an_unknown_key_is_an_error_that_names_it(files):
    root, _ = files
    state = _release_state()
    state["llama_model.base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = torch.zeros(4, 64)
    torch.save({"model": state}, root / "bad.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected: .*k_proj\.lora_A\.weight"):
        _load(root, "bad.pth")


def test_a_missing_lora_tensor_is_never_silently_dropped(files):
    root, _ = files
    state = _release_state()
    del state["llama_model.base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    torch.save({"model": state}, root / "partial.pth")
    with pytest.raises(CheckpointError, match=r"1 missing: .*layers\.1\.self_attn\.q_proj\.lora_B"):
        _load(root, "partial.pth")


def test_wrong_shapes_and_unknown_eva_keys_are_named(files):
    root, _ = files
    state = _release_state()
    state["llama_proj.bias"] = torch.zeros(7)
    torch.save({"model": state}, root / "shape.pth")
    with pytest.raises(CheckpointError, match=r"llama_proj\.bias has shape \(7,\)"):
        _load(root, "shape.pth")
    eva = _eva_state()
    eva["blocks.0.attn.qkv.bias"] = torch.zeros(3 * V.width)
    torch.save(eva, root / "eva_bad.pth")
    with pytest.raises(CheckpointError, match=r"unexpected: blocks\.0\.attn\.qkv\.bias"):
        load_release(None, root / "eva_bad.pth", root / "llama", cfg=CFG)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_pth_is_named_in_one_line(files, tmp_path, damage):
    root, _ = files
    data = (root / "skyeyegpt.pth").read_bytes()
    for name in ("skyeyegpt.pth", "eva_vit_g.pth"):
        broken = tmp_path / name
        broken.write_bytes(
            {"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 4, "empty": b""}[damage]
        )
        paths = {"skyeyegpt.pth": root / "skyeyegpt.pth", "eva_vit_g.pth": root / "eva_vit_g.pth", name: broken}
        with pytest.raises(CheckpointError, match="truncated or damaged") as err:
            load_release(paths["skyeyegpt.pth"], paths["eva_vit_g.pth"], root / "llama", cfg=CFG)
        assert str(err.value).startswith(f"{broken}: ") and "\n" not in str(err.value)


def test_integer_and_non_finite_release_tensors_are_named(files):
    root, _ = files
    state = _release_state()
    state["llama_proj.bias"] = state["llama_proj.bias"].long()
    torch.save({"model": state}, root / "ints.pth")
    with pytest.raises(CheckpointError, match=r"ints\.pth: llama_proj\.bias holds int64 values"):
        _load(root, "ints.pth")
    eva = _eva_state()
    eva["blocks.1.mlp.fc1.bias"] = eva["blocks.1.mlp.fc1.bias"].int()
    torch.save(eva, root / "eva_ints.pth")
    with pytest.raises(CheckpointError, match=r"eva_ints\.pth: blocks\.1\.mlp\.fc1\.bias holds int32 values"):
        load_release(None, root / "eva_ints.pth", root / "llama", cfg=CFG)

    state = _release_state()
    state["llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"][0, 0] = float("nan")
    torch.save({"model": state}, root / "nan.pth")
    model = _load(root, "nan.pth")
    with pytest.raises(CheckpointError, match=r"nan\.pth: llama_model\.model\.layers\.1\.self_attn\.v_proj\.lora_B"):
        model.ask(_image(), "what is it?", max_new_tokens=2)


def test_a_foreign_tensor_in_the_llama_folder_is_named(files, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    root, _ = files
    llama = tmp_path / "llama"
    shutil.copytree(root / "llama", llama)
    state = load_file(llama / "model.safetensors")
    state["model.extra.weight"] = torch.zeros(3)
    save_file(state, llama / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match=r"llama: the tensors do not match[\s\S]*unexpected: model\.extra\.weight"
    ):
        load_release(None, root / "eva_vit_g.pth", llama, cfg=CFG)
    data = (llama / "model.safetensors").read_bytes()
    (llama / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"^{llama}: a \.safetensors file is not readable, truncated"):
        load_release(None, root / "eva_vit_g.pth", llama, cfg=CFG)


def test_pickled_objects_are_refused_unless_trusted(files):
    root, _ = files
    torch.save({"model": _release_state(), "config": argparse.Namespace(arch="minigpt_v2")}, root / "pickled.pth")
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        _load(root, "pickled.pth")
    assert _load(root, "pickled.pth", allow_pickle=True) is not None


def test_convert_writes_a_folder_that_loads_to_the_same_model(files, tmp_path, monkeypatch, capsys):
    root, _ = files
    monkeypatch.setattr("skyeye.model.release.load_preset", lambda name: CFG)
    out = tmp_path / "converted"
    assert (
        main(
            [
                "convert",
                str(root / "skyeyegpt.pth"),
                "--eva",
                str(root / "eva_vit_g.pth"),
                "--llama",
                str(root / "llama"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    original, converted = _load(root), load_model(out)
    assert "prompt_style: minigptv2" in (out / "skyeye.yaml").read_text()
    assert original.cfg.prompt_style == converted.cfg.prompt_style == "minigptv2"
    assert _load(root, None).cfg.prompt_style == "skyeye", "bare MiniGPT-v2 parts (to train) keep the config's"
    assert load_model(out, prompt_style="skyeye").cfg.prompt_style == "skyeye"
    assert original.state_dict().keys() == converted.state_dict().keys()
    assert all(torch.equal(v, converted.state_dict()[k]) for k, v in original.state_dict().items())
    pixels = torch.randn(1, 3, 56, 56)
    assert torch.equal(original.encode_images(pixels), converted.encode_images(pixels))
    a, b = (
        original.ask(_image(), "what is it?", max_new_tokens=5),
        converted.ask(_image(), "what is it?", max_new_tokens=5),
    )
    assert a.text == b.text


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def test_trainable_parts_stay_float32_over_a_half_precision_base_and_learn(files):
    root, _ = files
    model = _load(root, dtype="float16")
    trainable = _trainable(model)
    assert {n.split(".")[0] for n in trainable} == {"llama_proj", "llama_model"} and any(
        "lora_" in n for n in trainable
    )
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert {p.dtype for n, p in model.named_parameters() if n not in trainable} == {torch.float16}
    assert torch.equal(model.llama_proj.weight, _release_state()["llama_proj.weight"]), "loaded without rounding"

    model.train()
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-5)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    sample = _tokens(model, "[vqa] what is it? [/INST] a blue field")
    pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    model(pixels=pixels, labels=sample["input_ids"], **sample).loss.backward()
    optimizer.step()
    for name, param in trainable.items():
        # A step of lr is lost in half precision for every weight above ~0.02; in float32 every weight with a
        # gradient moves (a gradient below Adam's eps gives a step below the rounding of the weight).
        moved = param != before[name]
        assert moved[param.grad.abs() > 1e-7].all(), f"{name}: {(~moved).sum()} of {moved.numel()} did not move"
        assert moved.float().mean() > 0.999, name


def test_a_half_precision_model_answers_like_the_float32_one(files):
    root, _ = files
    half, full = _load(root, dtype="float16"), _load(root, dtype="float32")
    sample = _tokens(full, "[vqa] what is it? [/INST]")
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        half_logits, full_logits = half(pixels=pixels, **sample).logits, full(pixels=pixels, **sample).logits
    assert half_logits.dtype == torch.float16 and torch.isfinite(half_logits).all()
    torch.testing.assert_close(half_logits.float(), full_logits, rtol=0, atol=0.05)
    assert (
        half.ask(_image(), "what is it?", max_new_tokens=4).text
        == full.ask(_image(), "what is it?", max_new_tokens=4).text
    )


def test_every_load_keeps_the_trainable_parts_float32(files, tmp_path):
    root, _ = files
    _load(root, dtype="float16").save_pretrained(tmp_path / "saved")
    for model in (load_model(tmp_path / "saved", dtype="float16"), load_model("tiny", dtype="float16")):
        assert model.cfg.dtype == "float16" and model.llama_model.lm_head.weight.dtype == torch.float16
        assert {p.dtype for p in _trainable(model).values()} == {torch.float32}
        model.set_trainable(["alignment", "lora", "vision"])
        assert {p.dtype for p in _trainable(model).values()} == {torch.float32}
        assert model.visual_encoder(torch.randn(1, 3, *(2 * [model.cfg.vision.image_size]))).isfinite().all()
    reloaded = load_model(tmp_path / "saved", dtype="float16").state_dict()
    original = _load(root, dtype="float16").state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in original.items()), "the saved folder keeps fp32 parts exactly"


def _tokens(model, text: str) -> dict[str, torch.Tensor]:
    from skyeye.model.inputs import collate, encode
    from skyeye.prompts import Conversation

    segments = Conversation().ask(text).segments(model.cfg.prompt_style)
    batch = collate([encode(segments, model.tokenizer, model.cfg.visual_tokens_per_image)], 0)
    return {k: batch[k] for k in ("input_ids", "image_mask", "attention_mask")}


def test_a_release_pth_without_its_companions_explains_what_is_needed(files):
    root, _ = files
    with pytest.raises(ValueError, match="EVA-CLIP-g weights.*LLaMA-2-chat folder"):
        load_model(root / "skyeyegpt.pth")


def _image():
    from PIL import Image

    return Image.new("RGB", (80, 60), (40, 120, 200))
