"""`skyeye eval` on several processes (accelerate launch / torchrun): the items are shared, and the merged
predictions and metrics are those of one process."""

import json
import os
import subprocess
import sys

import pytest

from skyeye.eval.record import RUN_FILE
from skyeye.eval.runner import METRICS_FILE, PART_FILE, PREDICTIONS_FILE, read_predictions, run_suite
from skyeye.eval.suites import Layout, Suite, read_items
from test_eval_runner import BOX, ScriptedModel

EVALUATE = """
import sys
from pathlib import Path
from skyeye.eval.runner import run_suite
from skyeye.eval.suites import Layout, Suite
from skyeye.model.loading import default_source, load_model

suite = Suite("synthetic-grounding", "grounding", "val", [Layout("synthetic", "scenes", {"n": 9, "size": 96})],
              opening=sys.argv[3] or None)
model = load_model(default_source(), merge_lora=True)
answer = model.iter_answers
asked = []
model.iter_answers = lambda images, *args, **kwargs: answer(asked.extend(images) or images, *args, **kwargs)
run_suite(model, suite, Path(sys.argv[1]), Path(sys.argv[2]), batch_size=2, progress=False, max_new_tokens=12)
print("asked", len(asked))
"""


def _suite(opening: str | None = None) -> Suite:
    layouts = [Layout("synthetic", "scenes", {"n": 9, "size": 96})]
    return Suite("synthetic-grounding", "grounding", "val", layouts, opening=opening)


def _without_time(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "seconds"}


@pytest.mark.parametrize("opening", ["", "What can you tell me about this image?"])
def test_two_processes_write_the_predictions_and_metrics_of_one(tmp_path, opening):
    """With an opening each process asks it for its own items' images, in batches of other neighbours than one
    process would form: left padding is masked, so the answers must not change."""
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels in both runs
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "data"), str(tmp_path / "one"), opening],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29547",
         str(script), str(tmp_path / "data"), str(tmp_path / "two"), opening],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    items, _ = read_items(_suite(), tmp_path / "data")
    rows = read_predictions(tmp_path / "one" / PREDICTIONS_FILE)
    assert [row["id"] for row in rows] == [item.id for item in items] and len(items) > 4  # 3 batches or more
    assert all(("opening" in row) == bool(opening) for row in rows)
    shares = sorted(int(line.split()[-1]) for line in two.stdout.splitlines() if line.startswith("asked"))
    batches = [items[start : start + 2] for start in range(0, len(items), 2)]
    # Whole batches go round-robin; a process asks the opening once per distinct image of its share, then each item.
    mine = [[item for batch in batches[index::2] for item in batch] for index in range(2)]
    expected = [len(share) + (len({item.images[0] for item in share}) if opening else 0) for share in mine]
    assert shares == sorted(expected), "whole batches go round-robin"
    assert (tmp_path / "two" / PREDICTIONS_FILE).read_bytes() == (tmp_path / "one" / PREDICTIONS_FILE).read_bytes()
    assert sorted(path.name for path in (tmp_path / "two").iterdir()) == [METRICS_FILE, PREDICTIONS_FILE, RUN_FILE]
    one_metrics, two_metrics = (json.loads((tmp_path / run / METRICS_FILE).read_text()) for run in ("one", "two"))
    assert _without_time(two_metrics) == _without_time(one_metrics)


def test_parts_left_by_an_interrupted_run_of_several_processes_are_merged_on_resume(tmp_path):
    reference = tmp_path / "reference"
    run_suite(ScriptedModel(default=BOX), _suite(), tmp_path, reference, batch_size=2, progress=False)
    lines = (reference / PREDICTIONS_FILE).read_text().splitlines(keepends=True)
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / RUN_FILE).write_text((reference / RUN_FILE).read_text())
    (interrupted / PREDICTIONS_FILE).write_text("".join(lines[:2]))  # process 0: batch 0
    # process 1: batch 1, and a line cut by the interruption
    (interrupted / PART_FILE.format(index=1)).write_text("".join(lines[2:4]) + lines[5][:20])
    model = ScriptedModel(default=BOX)
    run_suite(model, _suite(), tmp_path, interrupted, batch_size=2, progress=False)
    items, _ = read_items(_suite(), tmp_path)
    assert model.asked == [str(tmp_path / item.images[0]) for item in items[4:]]
    assert (interrupted / PREDICTIONS_FILE).read_text() == "".join(lines)
    assert not list(interrupted.glob(PART_FILE.format(index="*")))
