"""A suite's metrics as the paper prints them (x100), with SkyEyeGPT's published numbers beside ours."""

from __future__ import annotations

from skyeye.eval.grounding import PER_CLASS_ACCURACY
from skyeye.eval.interval import wilson_interval
from skyeye.eval.record import describe_run
from skyeye.eval.suites import Suite


def headline(metric: str, metrics: dict) -> dict[str, float]:
    """The numbers a paper table shows, x100, in its column order."""
    if metric in ("captioning", "reg"):
        return {name: 100 * value for name, value in metrics.items()}
    if metric == "vqa":
        rated = sorted(kind for kind in metrics["per_type"] if kind != "count")
        columns = {kind: 100 * metrics["per_type"][kind]["accuracy"] for kind in rated}
        if metrics["AA"] is not None:
            columns.update(AA=100 * metrics["AA"], OA=100 * metrics["OA"])
        if "count" in metrics:
            columns["count"] = 100 * metrics["count"]["accuracy"]
        return columns
    if metric == "grounding":
        columns = {name: 100 * value for name, value in metrics.items() if name.startswith("Acc@")}
        columns.update(mIoU=100 * metrics["mean_IoU"], cIoU=100 * metrics["cumulative_IoU"])
        return columns
    return {"accuracy": 100 * metrics["accuracy"]}


def format_table(suite: Suite, report: dict) -> str:
    """The table, under a header naming the split and what produced the numbers (`report["run"]`)."""
    ours = headline(suite.metric, report["metrics"])
    columns = list(ours) + [name for name in suite.paper if name not in ours]
    width = max(8, *(len(c) for c in columns))
    label = 20
    timing = f", {report['seconds']:.0f} s" if "seconds" in report else ""
    lines = [f"{suite.name} ({report['split']}, {report['items']:,} items{timing})", describe_run(report.get("run")),
             "model".ljust(label) + "".join(c.rjust(width + 2) for c in columns)]  # fmt: skip

    def row(name: str, values: dict[str, float]) -> str:
        cells = (f"{values[c]:.2f}" if c in values else "-" for c in columns)
        return name.ljust(label) + "".join(cell.rjust(width + 2) for cell in cells)

    lines.append(row("SkyEye (this run)", ours))
    if suite.paper:
        lines.append(row("SkyEyeGPT (paper)", suite.paper))
    if suite.metric == "vqa" and "count" in ours:
        lines.append("AA and OA leave out count questions, as the RS-MLLM papers do; count is shown apart.")
    if suite.metric == "grounding" and report["metrics"].get("misses"):
        lines.append(f"{report['metrics']['misses']:,} answers held no box and count as misses.")
    if suite.metric == "grounding" and report["metrics"].get("per_class"):
        classes = report["metrics"]["per_class"].items()
        cells = ", ".join(f"{name} {100 * score[PER_CLASS_ACCURACY]:.1f} ({score['n']})" for name, score in classes)
        lines.append(f"{PER_CLASS_ACCURACY} per class (items): {cells}")
    off_list = report["metrics"].get("off_list") if suite.metric == "scene" else None
    if off_list and off_list["count"]:
        common = ", ".join(f"{answer!r} {n}" for answer, n in list(off_list["answers"].items())[:5])
        lines.append(
            f"{off_list['count']:,} answers named no class of the list (most often: {common}); "
            f"{off_list['another_name']:,} of them named the right class by another of its names."
        )
    spread = _interval_line(suite.metric, report["metrics"])
    if spread:
        lines.append(spread)
    return "\n".join(lines)


def _headline_rate(metric: str, metrics: dict) -> tuple[str, float, int] | None:
    """The suite's main proportion (name, rate, items), or None for captioning, whose scores are no proportions."""
    if metric == "grounding":
        return "Acc@0.5", metrics["Acc@0.5"], metrics["n"]
    if metric == "vqa" and metrics.get("OA") is not None:
        rated = sum(result["n"] for kind, result in metrics["per_type"].items() if kind != "count")
        return "OA", metrics["OA"], rated
    if metric == "scene":
        return "accuracy", metrics["accuracy"], metrics["n"]
    return None


def _interval_line(metric: str, metrics: dict) -> str | None:
    headline_rate = _headline_rate(metric, metrics)
    if headline_rate is None:
        return None
    name, rate, n = headline_rate
    low, high = wilson_interval(rate, n)
    return (f"{name} {100 * rate:.2f} on {n:,} items: 95% interval {100 * low:.1f}-{100 * high:.1f} (Wilson); "
            "runs whose intervals overlap widely are not told apart by this suite.")  # fmt: skip
