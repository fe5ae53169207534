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

    real = answer_module._generate

    def grounded(model, *args, **kwargs):
        answers = real(model, *args, **kwargs)
        for a in answers:
            a.text = "<p>runway</p> {<10><0><60><50>}"
            a.boxes = find_boxes(a.text, 517, 33)
        return answers

    monkeypatch.setattr(answer_module, "_generate", grounded)
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


# ---------------------------------------------------------------- one frame for sizes and boxes


@pytest.fixture
def rotated_jpeg(tmp_path):
    """A JPEG stored 40 x 20 whose EXIF orientation (6) says it is shown turned a quarter: 20 x 40 upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (40, 20), (90, 120, 60)).save(path, exif=exif)
    return path


@pytest.fixture
def whole_image_answer(monkeypatch):
    """Every answer is one box over the whole grid; its pixels still come from the real answer code."""
    from skyeye.model.tokenizer import bundled_path, load_tokenizer

    tokenizer_class = type(load_tokenizer(bundled_path("tokenizer-tiny")))
    monkeypatch.setattr(tokenizer_class, "decode", lambda self, *a, **k: "<p>field</p> {<0><0><100><100>}")


def test_ask_json_reports_the_size_of_the_frame_its_boxes_are_in(rotated_jpeg, whole_image_answer, tmp_path, capsys):
    drawn = tmp_path / "drawn.png"
    args = ["ask", str(rotated_jpeg), "where is the field?", "--json", "--draw", str(drawn), "--max-new-tokens", "2"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    x1, y1, x2, y2 = result["boxes"][0]["pixels"]
    assert [x2 - x1, y2 - y1] == result["image_size"] == [20, 40]
    with Image.open(drawn) as img:
        assert list(img.size) == result["image_size"]


def test_chat_save_reports_the_size_of_the_frame_its_boxes_are_in(rotated_jpeg, small_model, tmp_path):
    import io

    from skyeye.serve.chat import TerminalChat

    terminal = TerminalChat(small_model, rotated_jpeg, out=io.StringIO(), max_new_tokens=2)
    saved = tmp_path / "chat.json"
    terminal.command(f"/save {saved}")
    assert json.loads(saved.read_text())["image_size"] == list(terminal.chat.size) == [20, 40]


# ---------------------------------------------------------------- errors: one line, JSON with --json


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("skyeye: note:")]
    assert len(lines) == 1 and lines[0].startswith("skyeye: error: "), err
    return lines[0]


def test_an_unusable_device_is_refused_before_the_model_is_read(tmp_path, capsys):
    import torch

    from skyeye.model.loading import load_model

    unusable = ["no-such-device", "cuda:64", "meta"] + ([] if torch.cuda.is_available() else ["cuda"])
    image = str(Path(__file__).parent.parent / "examples" / "scene.png")
    for device in unusable:
        assert main(["ask", image, "q", "--device", device]) == 2
        assert device in _one_error_line(capsys.readouterr().err)
        # Checked first: a source that does not exist is not even looked at.
        with pytest.raises(ValueError, match="--device"):
            load_model(tmp_path / "nowhere", device=device)


def test_ask_json_errors_are_json_on_stdout(odd_images, tmp_path, capsys):
    image = str(odd_images["gray"])
    failures = [
        ["ask", str(tmp_path / "missing.png"), "q"],
        ["ask", image, "q", "--model", str(tmp_path / "no-model")],
        ["ask", image, "q", "--device", "no-such-device"],
        ["ask", image, "q", "--task", "no-such-task"],
        ["ask", image, "q", "--num-beams", "0"],
        ["ask", image],
    ]
    for args in failures:
        code = _exit_code([*args, "--json"])
        out, err = capsys.readouterr()
        assert code == 2, args
        assert list(json.loads(out)) == ["error"] and json.loads(out)["error"], args
        assert "Traceback" not in err


@pytest.mark.parametrize(("raised", "status"), [(KeyboardInterrupt(), 130), (RuntimeError("a bug"), None)])
def test_ask_json_gets_json_when_interrupted_or_on_a_bug(raised, status, odd_images, monkeypatch, capsys):
    import skyeye.cli

    def fail(args):
        raise raised

    monkeypatch.setattr(skyeye.cli, "_load", fail)
    argv = ["ask", str(odd_images["gray"]), "q", "--json"]
    if status is None:  # a bug keeps its traceback, for the report, and stdout still holds one JSON object
        with pytest.raises(RuntimeError):
            main(argv)
    else:
        assert main(argv) == status
    assert json.loads(capsys.readouterr().out)["error"]


def _exit_code(argv: list[str]) -> int:
    """`main`'s status, whether it returns it or, for a usage error, exits with it as argparse does."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def test_user_input_errors_are_one_line_not_tracebacks(odd_images, tmp_path, capsys):
    image = str(odd_images["gray"])
    ask = ["ask", image, "q", "--model", "tiny", "--max-new-tokens", "2"]
    for argv, named in [
        ([*ask, "--num-beams", "0"], "--num-beams"),
        ([*ask, "--max-new-tokens", "0"], "--max-new-tokens"),
        ([*ask, "--max-pixels", "0"], "--max-pixels"),
        ([*ask, "--sample", "--top-p", "1.5"], "--top-p"),
        (["web", "--port", "-5"], "--port"),
        (["chat", image, "--max-new-tokens", "-1"], "--max-new-tokens"),
    ]:
        assert _exit_code(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and named in err.splitlines()[-1], err
    assert main([*ask, "--draw", str(tmp_path / "boxes.unknown-format")]) == 2
    assert "boxes.unknown-format" in _one_error_line(capsys.readouterr().err)
    config = Path(__file__).parent.parent / "configs" / "train" / "stage1-7b.yaml"
    assert main(["train", str(config), "data=[{records: unclosed"]) == 2
    assert "data=[{records: unclosed" in _one_error_line(capsys.readouterr().err)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nvision: [1, 2\n")
    assert main(["ask", image, "q", "--model", str(broken)]) == 2
    assert "broken.yaml" in _one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- what the command says about itself


def test_version(capsys):
    from importlib.metadata import version

    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"skyeye {version('skyeye')}"


def test_info_without_argument_names_the_bundled_model(capsys):
    from skyeye.model.loading import bundled_model

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "bundled" in out.splitlines()[0] and str(bundled_model()) in out.splitlines()[0]
    vision = next(line for line in out.splitlines() if line.strip().startswith("vision"))
    assert "conv:" in vision and "heads" not in vision  # the bundled CNN tower has no attention heads
    assert main(["info", "tiny"]) == 0
    assert "preset tiny" in capsys.readouterr().out.splitlines()[0]
    from skyeye.model.config import preset_dir

    assert main(["info", str(preset_dir() / "tiny.yaml")]) == 0  # a model config, as --model takes it
    assert capsys.readouterr().out.splitlines()[0] == f"model config {preset_dir() / 'tiny.yaml'}"


@pytest.mark.parametrize("command", [["ask", "x.png", "q"], ["chat", "x.png"], ["web"], ["eval", "list"]])
def test_model_help_lists_every_preset(command, tmp_path, monkeypatch, capsys):
    from skyeye.model import config

    presets = tmp_path / "presets"
    presets.mkdir()
    for source in config.preset_dir().glob("*.yaml"):
        (presets / source.name).write_text(source.read_text())
    (presets / "added-later.yaml").write_text((presets / "tiny.yaml").read_text())
    monkeypatch.setattr(config, "preset_dir", lambda: presets)
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: argparse would break `tiny-conv` after its hyphen
    assert _exit_code([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    model_help = text.split("--model MODEL ")[1].split(" --eva ")[0]
    for preset in presets.glob("*.yaml"):
        assert preset.stem in model_help


def test_boxes_drawn_is_said_only_when_there_were_boxes(odd_images, whole_image_answer, monkeypatch, tmp_path, capsys):
    image, drawn = str(odd_images["gray"]), tmp_path / "drawn.png"
    ask = ["ask", image, "where?", "--model", "tiny", "--max-new-tokens", "2", "--draw", str(drawn)]
    assert main(ask) == 0
    assert f"1 box drawn to {drawn}" in capsys.readouterr().err and drawn.is_file()
    drawn.unlink()
    from skyeye.model.tokenizer import bundled_path, load_tokenizer

    monkeypatch.setattr(type(load_tokenizer(bundled_path("tokenizer-tiny"))), "decode", lambda *a, **k: "a field")
    assert main(ask) == 0
    err = capsys.readouterr().err
    assert "drawn to" not in err and f"no boxes in the answer; {drawn} written without boxes" in err
    assert drawn.is_file()


def test_ask_keeps_a_class_list_answer_to_the_list_unless_told_to_answer_freely(capsys):
    from skyeye.class_lists import SCENE

    # Names the bundled model never learned: free, it answers in its own words.
    names = ["alpha site", "beta site", "gamma site"]
    question = SCENE.format(classes=", ".join(names))
    answers = {}
    for free in (False, True):
        image = str(Path(__file__).parent.parent / "examples" / "scene.png")
        code = main(["ask", image, question, "--json"] + (["--free-answers"] if free else []))
        out, err = capsys.readouterr()
        assert code == 0, err
        answers[free] = json.loads(out)["answer"]
    assert answers[False] in names
    assert answers[True] not in names
