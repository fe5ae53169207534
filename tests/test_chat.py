"""`skyeye chat` driven through a pipe, as a script would (two turns, a task switch, a saved transcript), and
through a pseudo-terminal, as a person would (line editing, history, Ctrl-C, Ctrl-D)."""

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCENE = Path(__file__).parent.parent / "examples" / "scene.png"


def test_chat_through_a_pipe_keeps_the_history_and_saves_it(tmp_path):
    saved = tmp_path / "chat.json"
    script = f"/task grounding\nwhere is the building?\n/task caption\nBriefly describe this image.\n/save {saved}\n"
    done = subprocess.run([sys.executable, "-m", "skyeye.cli", "chat", str(SCENE), "--max-new-tokens", "24"],
                          input=script, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [line.removeprefix("skyeye> ") for line in done.stdout.splitlines() if line.startswith("skyeye> ")]
    assert len(answers) == 2 and "you>" not in done.stdout  # no prompts without a terminal
    record = json.loads(saved.read_text())
    assert [turn["user"] for turn in record["turns"]] == ["[refer] where is the building?",
                                                          "[caption] Briefly describe this image."]  # fmt: skip
    assert [turn["assistant"] for turn in record["turns"]] == [a.strip() for a in answers]
    listed = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("box ")]
    assert len(listed) == sum(len(turn["boxes"]) for turn in record["turns"])
    assert record["image"] == str(SCENE) and record["image_size"] == [256, 256]


def test_chat_reports_bad_commands_and_files_and_carries_on(tmp_path):
    script = "/image no-such.png\n/task nonsense\n/frobnicate\n/help\n"
    done = subprocess.run([sys.executable, "-m", "skyeye.cli", "chat", str(SCENE)], input=script,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "error: no-such.png: no such file" in done.stdout
    assert "unknown task 'nonsense'" in done.stdout and "unknown command /frobnicate" in done.stdout
    assert "/save FILE" in done.stdout


class Terminal:
    """`skyeye chat ARGS` running on a pseudo-terminal: keystrokes in, everything it shows out."""

    def __init__(self, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal is its stdin, stdout, stderr and controlling tty
            os.execvpe(sys.executable, [sys.executable, "-m", "skyeye.cli", "chat", *args],
                       {**os.environ, "TERM": "xterm"})  # fmt: skip
        self.shown = ""

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        self.wait_until(lambda shown: shown.count(text) >= count, f"{text!r} shown {count}x", timeout)

    def wait_until(self, shown_enough, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not shown_enough(self.shown):
            assert time.monotonic() < deadline, f"waited for {what}; the terminal shows:\n{self.shown}"
            if select.select([self.fd], [], [], 0.5)[0]:
                try:
                    self.shown += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the child has gone; everything it wrote has been read
                    assert shown_enough(self.shown), f"waited for {what}; the terminal shows:\n{self.shown}"

    def exit_status(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):  # the child has gone; everything it wrote has been read
                    self.shown += os.read(self.fd, 4096).decode(errors="replace")
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        pytest.fail(f"skyeye chat did not exit; the terminal shows:\n{self.shown}")


LEFT, UP, CTRL_C, CTRL_D = "\x1b[D", "\x1b[A", "\x03", "\x04"


def test_a_terminal_edits_lines_recalls_them_and_leaves_on_ctrl_c(small_model, tmp_path):
    small_model.save_pretrained(tmp_path / "model")
    chat = Terminal(str(SCENE), "--model", str(tmp_path / "model"))
    chat.wait_for("you> ")
    chat.type("/tas none" + LEFT * 5 + "k\r")  # fix the typo with the arrow keys
    chat.wait_for("you> ", count=2)
    chat.type(UP + "\r")  # the line again, from the history
    chat.wait_for("task: none", count=2)
    chat.wait_for("you> ", count=3)
    # Python's readline notices a signal only while it waits for a key: one landing in the instant between the
    # prompt being drawn and that wait is seen at the next key (too quick for a person, not for a test).
    time.sleep(1)
    chat.type(CTRL_C)
    assert chat.exit_status() == 0
    assert "Traceback" not in chat.shown and "unknown command" not in chat.shown


def test_ctrl_c_stops_a_streaming_answer_and_the_conversation_goes_on(small_model, tmp_path):
    small_model.save_pretrained(tmp_path / "model")  # random weights: a long answer that never ends early
    chat = Terminal(str(SCENE), "--model", str(tmp_path / "model"), "--max-new-tokens", "200")
    chat.wait_for("you> ")
    chat.type("Briefly describe this image.\r")
    chat.wait_until(lambda shown: shown.partition("skyeye> ")[2].strip(), "the answer's first words")
    chat.type(CTRL_C)
    chat.wait_for("(answer stopped)")
    chat.wait_for("you> ", count=2)
    chat.type("/save " + str(tmp_path / "chat.json") + "\r")
    chat.wait_for("you> ", count=3)
    chat.type(CTRL_D)
    assert chat.exit_status() == 0
    assert "Traceback" not in chat.shown
    assert json.loads((tmp_path / "chat.json").read_text())["turns"] == []  # the stopped answer is not kept


def test_ctrl_c_ends_a_piped_chat_with_one_line(small_model, tmp_path):
    small_model.save_pretrained(tmp_path / "model")
    chat = subprocess.Popen([sys.executable, "-m", "skyeye.cli", "chat", str(SCENE), "--model", str(tmp_path / "model"),
                             "--max-new-tokens", "200"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    chat.stdin.write("Briefly describe this image.\nBriefly describe this image.\n")
    chat.stdin.flush()
    assert chat.stdout.read(len("skyeye> ")) == "skyeye> "  # the answer is streaming
    chat.send_signal(signal.SIGINT)
    out, err = chat.communicate(timeout=60)
    assert chat.returncode == 130
    assert err.strip() == "skyeye: interrupted" and "skyeye> " not in out  # the second question is not asked
