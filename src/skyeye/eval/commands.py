"""What `skyeye eval` does, kept out of the argument parser."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from skyeye.eval.record import read_run
from skyeye.eval.runner import METRICS_FILE, PREDICTIONS_FILE, read_predictions, require_tools, run_suite, score
from skyeye.eval.suites import load_suites
from skyeye.eval.table import format_table


def _suite(name: str):
    suites = load_suites()
    if name not in suites:
        raise SystemExit(f"skyeye eval: unknown suite {name!r}; suites: {', '.join(suites)}")
    return suites[name]


def list_suites() -> int:
    for name, suite in load_suites().items():
        folders = " or ".join(layout.path for layout in suite.layouts)
        print(f"{name:22} {suite.metric:11} split {suite.split:11} data: {folders}")
    return 0


def evaluate(name: str, load_model: Callable, root: Path, out: Path | None, **options) -> int:
    """Runs suite `name`; `options` are run_suite's (split, limit, restart, model_source, ...) and generation's."""
    suite = _suite(name)
    suite.layout_under(root)  # fail on missing data or tools before the model loads
    require_tools(suite)
    out = out or Path("runs/eval") / name
    report = run_suite(load_model(), suite, root, out, **options)
    if report is None:  # one of several processes: the main one merges, scores and prints
        return 0
    print(format_table(suite, report))
    print(f"predictions: {out / PREDICTIONS_FILE}; metrics: {out / METRICS_FILE}")
    return 0


def rescore(predictions: Path, spice: bool = False) -> int:
    rows = read_predictions(predictions)
    if not rows:
        raise SystemExit(f"{predictions}: no predictions")
    names = {row.get("suite") for row in rows}
    if len(names) != 1:
        raise SystemExit(f"{predictions}: rows of several suites {sorted(map(str, names))}; score one at a time")
    suite = _suite(names.pop())
    # run.json describes the predictions.jsonl beside it; older SkyEye versions wrote none.
    run = read_run(predictions.parent) if predictions.name == PREDICTIONS_FILE else None
    run = run if run and run.get("suite") == suite.name else None
    report = {
        "suite": suite.name,
        "split": run["split"] if run else "saved predictions",
        "items": len(rows),
        "run": run,
        "metrics": score(suite, rows, spice),
    }
    print(format_table(suite, report))
    print(json.dumps(report["metrics"], indent=1))
    return 0
