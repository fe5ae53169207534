"""`skyeye chat` driven through a pipe, as a script would: two turns, a task switch, a saved transcript."""

import json
import subprocess
import sys
from pathlib import Path

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
