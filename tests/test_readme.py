"""The README's commands, as a reader runs them.

Every ```bash block: each `skyeye` command in it (also the part after `-m skyeye.cli` of an `accelerate launch`
or `torchrun` line) must parse with the real argument parser; synopsis lines, which show options in brackets
(`[--model M]`), are exempt. Every ```python block must compile.

Blocks marked `<!-- readme-test: run -->` are run in a fresh temporary folder laid out like the repository
(`examples/` and `configs/` linked), command by command: `skyeye` through `skyeye.cli.main`, the code of the
console script, in this process so that torch and transformers are imported once; python blocks with `exec`.
Each command must succeed and leave what it promises (`--draw` and `--out` files, JSON, a falling loss).

Left unrun, each for a reason, with their commands parsed all the same (times measured on this project's
2-core machine):
- `pip install` and `pytest` in "Set up": the installation itself and this very suite.
- `skyeye web`: a server, it runs until stopped (tests/test_web.py serves the app).
- the released 7B checkpoint (`skyeye convert`, `--model skyeyegpt-7b/ --device cuda`): 14 GB of weights, a GPU.
- `skyeye data build` of the shared data (23 s) and of SkyEye-968k (not on this machine), `data synth --n 500`
  (29 s) and `--n 1500`, and `data show` of what they write: tests/test_data_build.py and tests/test_synth.py
  build the same recipes on small fixtures.
- the bundled model's training (52 minutes) and the `skyeye eval` suites (17 to 43 s each, Java for captions;
  tests/test_eval_runner.py runs `eval synthetic-grounding --data-root data/synth-eval` on fewer scenes).
- `skyeye map` on whole scenes (scene.tif is the reader's own; the BigEarthNet example reads the shared data):
  tests/test_geo_*.py map generated scenes.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path

import pytest

from skyeye.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUN_MARK = "<!-- readme-test: run -->"
NOT_RUN = {"pip": "the installation itself", "pytest": "this very suite"}
CHAT_INPUT = "[caption] Briefly describe this image.\n/save chat.json\n"


def _blocks() -> list[dict]:
    """Every fenced block: its language, its lines, the section it is in, and whether it is marked to run."""
    blocks, section, block, previous = [], "", None, ""
    for line in README.read_text().splitlines():
        if block is not None:
            if line.startswith("```"):
                blocks.append(block)
                block = None
            else:
                block["lines"].append(line)
        elif line.startswith("```"):
            block = {"lang": line[3:].strip(), "lines": [], "section": section, "run": previous == RUN_MARK}
        elif line.startswith("## "):
            section = line[3:].strip()
        if line.strip():
            previous = line.strip()
    return blocks


def _commands(lines: list[str]) -> list[list[str]]:
    """Shell lines as argument lists: `\\` continuations joined, comments dropped, `&&` chains split."""
    text = "\n".join(lines).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words:
                commands.append(words)
    return commands


def _skyeye_args(words: list[str]) -> list[str] | None:
    """The arguments `skyeye` gets from a command, or None when the command does not run skyeye."""
    if words[0] == "skyeye":
        return words[1:]
    if "skyeye.cli" in words and words[words.index("skyeye.cli") - 1] == "-m":
        return words[words.index("skyeye.cli") + 1 :]
    return None


def _is_synopsis(args: list[str]) -> bool:
    return any(word.startswith("[-") for word in args)


def _bash_blocks(run: bool | None = None) -> list[dict]:
    return [b for b in _blocks() if b["lang"] == "bash" and (run is None or b["run"] == run)]


def test_the_readme_marks_blocks_to_run():
    sections = {b["section"] for b in _blocks() if b["run"]}
    assert {"Set up", "Asking questions", "Training"} <= sections


def test_every_skyeye_command_in_the_readme_parses():
    parsed = 0
    for block in _bash_blocks():
        for words in _commands(block["lines"]):
            args = _skyeye_args(words)
            if args is None or _is_synopsis(args):
                continue
            try:
                build_parser().parse_args(args)
            except SystemExit as exit_:  # --help and --version print and exit 0
                assert exit_.code == 0, words
            parsed += 1
    assert parsed >= 20


def test_every_python_block_in_the_readme_compiles():
    for number, block in enumerate(b for b in _blocks() if b["lang"] == "python"):
        compile("\n".join(block["lines"]), f"README.md python block {number}", "exec")


def _run_ids() -> list[str]:
    return [f"{b['section']} ({b['lang']})" for b in _blocks() if b["run"]]


@pytest.mark.parametrize("block", [b for b in _blocks() if b["run"]], ids=_run_ids())
def test_marked_blocks_run_as_written(block, tmp_path, monkeypatch, capsys):
    for name in ("examples", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    if block["lang"] == "python":
        exec(compile("\n".join(block["lines"]), "README.md", "exec"), {})
        assert capsys.readouterr().out.strip()
        return
    assert block["lang"] == "bash"
    for words in _commands(block["lines"]):
        if words[0] in NOT_RUN:
            continue
        args = _skyeye_args(words)
        assert args is not None, f"{shlex.join(words)}: say in tests/test_readme.py how to run it or why not"
        monkeypatch.setattr(sys, "stdin", io.StringIO(CHAT_INPUT))
        try:
            code = main(args)
        except SystemExit as exit_:  # --help and --version
            code = exit_.code
        out, err = capsys.readouterr()
        assert code == 0, f"{shlex.join(words)} exited {code}:\n{err}"
        _check_promises(args, out)
    if block["section"] == "Training":
        last_train = [words for words in _commands(block["lines"]) if words[:2] == ["skyeye", "train"]][-1]
        steps = int(next(word for word in last_train if word.startswith("steps="))[len("steps=") :])
        _check_the_loss_falls(tmp_path / "runs" / "quick", steps)


def _check_promises(args: list[str], out: str) -> None:
    """What the command says it prints or leaves behind is there."""
    command = f"skyeye {shlex.join(args)}"
    options = dict(zip(args, args[1:], strict=False))
    if args[0] in ("ask", "chat", "info", "plot", "--help", "--version"):
        assert out.strip(), f"{command} printed nothing"
    if "--draw" in options:
        assert Path(options["--draw"]).is_file(), command
    if "--json" in args:
        assert "error" not in json.loads(out.splitlines()[-1]), command
    if args[:2] == ["data", "synth"]:
        assert (Path(options["--out"]) / "stats.json").is_file(), command
    if args[0] == "plot":
        assert (Path(args[1]) / "curves.png").is_file(), command
    if args[0] == "chat":
        assert json.loads(Path("chat.json").read_text())["turns"], command


def _check_the_loss_falls(run: Path, steps: int) -> None:
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged_steps = [entry["step"] for entry in logged]
    assert logged_steps == list(range(1, steps + 1)), logged_steps  # the resumed run logs each step once
    losses = [entry["loss"] for entry in logged]
    first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    assert first > 7 and last < first - 3, losses
    assert (run / "final" / "skyeye.yaml").is_file()
