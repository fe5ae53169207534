"""`skyeye ask` / `skyeye info` as a user runs them, on odd images and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skyeye.boxes import find_boxes
from skyeye.cli import main


@pytest.fixture
def odd_images(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    paths["gray"] = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 255, (33, 517), dtype=np.uint8)).save(paths["gray"])
    paths["rgba"] = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), "RGBA").save(paths["rgba"])
    paths["16bit"] = tmp_path / "sixteen.tif"
    Image.fromarray(rng.integers(0, 65535, (64, 48), dtype=np.uint16)).save(paths["16bit"])
    paths["tiny"] = tmp_path / "one.jpg"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(paths["tiny"])
    return paths


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "tiny"])
def test_ask_answers_on_odd_images_and_draws(kind, odd_images, tmp_path, capsys):
    drawn = tmp_path / "drawn.png"
    code = main(
        [
            "ask",
            str(odd_images[kind]),
            "[refer] where is the white plane?",
            "--model",
            "tiny",
            "--max-new-tokens",
            "6",
            "--json",
            "--draw",
            str(drawn),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert isinstance(result["answer"], str) and result["timings"]["new_tokens"] <= 6
    assert result["image_size"] == list(Image.open(odd_images[kind]).size)
    assert "RANDOM weights" in err
    with Image.open(drawn) as img:
        assert img.mode == "RGB" and img.size == tuple(result["image_size"])


def test_ask_plain_output_lists_boxes_in_pixels(odd_images, monkeypatch, capsys):
    from skyeye.model import answer as answer_module

    real = answer_module._ask_batch

    def grounded(model, *args, **kwargs):
        answers = real(model, *args, **kwargs)
        for a in answers:
            a.text = "<p>runway</p> {<10><0><60><50>}"
            a.boxes = find_boxes(a.text, 517, 33)
        return answers

    monkeypatch.setattr(answer_module, "_ask_batch", grounded)
    assert (
        main(
            [
                "ask",
                str(odd_images["gray"]),
                "where is the runway?",
                "--task",
                "grounding",
                "--model",
                "tiny",
                "--max-new-tokens",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "<p>runway</p> {<10><0><60><50>}"
    assert out[1].startswith("box 1: runway  pixels (52, 0, 310, 16)")


def test_bad_images_are_clear_errors(tmp_path, capsys):
    assert main(["ask", str(tmp_path / "missing.png"), "q", "--model", "tiny"]) == 2
    assert "missing.png" in capsys.readouterr().err
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    assert main(["ask", str(fake), "q", "--model", "tiny"]) == 2
    assert "fake.png: not an image PIL can read" in capsys.readouterr().err
    big = tmp_path / "big.png"
    Image.new("1", (3000, 3000)).save(big)
    assert main(["ask", str(big), "q", "--model", "tiny", "--max-pixels", "1000000"]) == 2
    assert "over the limit" in capsys.readouterr().err


def test_info_prints_7b_counts_without_allocating(capsys):
    assert main(["info", "skyeyegpt-7b"]) == 0
    out = capsys.readouterr().out
    assert "width 1408, depth 39" in out and "Linear(5632, 4096)" in out
    lora_line = next(line for line in out.splitlines() if line.strip().startswith("LoRA adapters"))
    assert lora_line.split()[2] == f"{32 * 2 * 2 * 64 * 4096:,}"
    total = int(out.split("all parameters: ")[1].split()[0].replace(",", ""))
    assert 7.7e9 < total < 7.9e9


def test_the_console_script_answers_from_a_fresh_process(odd_images):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "skyeye.cli",
            "ask",
            str(odd_images["rgba"]),
            "[caption] Briefly describe this image.",
            "--max-new-tokens",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != ""


def test_the_default_model_is_the_bundled_trained_one(capsys):
    from skyeye.model.loading import bundled_model, default_source

    bundled = bundled_model()
    assert bundled is not None and default_source() == str(bundled)
    size = sum(f.stat().st_size for f in bundled.rglob("*") if f.is_file())
    assert size <= 50 * 2**20, f"the bundled model is {size / 2**20:.1f} MB, over the 50 MB budget"
    image = str(Path(__file__).parent.parent / "examples" / "scene.png")
    assert main(["ask", image, "[caption] Briefly describe this image.", "--max-new-tokens", "24"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and "RANDOM" not in err
