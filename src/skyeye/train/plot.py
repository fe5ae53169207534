"""`skyeye plot RUN_DIR`: the loss and learning-rate curves of a run, from its metrics.jsonl, as a PNG."""

from __future__ import annotations

import sys
from pathlib import Path

from skyeye.train.metrics_log import METRICS_FILE, read_log


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log (is {run_dir} a training run folder?)")
    rows, torn = read_log(path)
    if torn:
        print(f"{path}: left out a truncated last line (a run killed mid-write)", file=sys.stderr)
    if not rows:
        raise ValueError(f"{path}: the log is empty")
    return rows


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    figure, (loss_axis, lr_axis) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    loss_axis.plot(steps, [r["loss"] for r in rows], color="tab:blue")
    loss_axis.set_ylabel("loss")
    loss_axis.grid(alpha=0.3)
    lr_axis.plot(steps, [r["lr"] for r in rows], color="tab:orange")
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("step")
    lr_axis.grid(alpha=0.3)
    figure.suptitle(Path(run_dir).resolve().name)
    figure.tight_layout()
    out = Path(out) if out is not None else Path(run_dir) / "curves.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
