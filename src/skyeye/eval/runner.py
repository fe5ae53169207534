"""`skyeye eval`: ask a model every item of a suite, save the answers, score them, print the paper's table.

Predictions are appended to `predictions.jsonl` batch by batch (one line per item: the prompt, the raw
answer and the reference), so an interrupted run resumes where it stopped and `skyeye eval score` can
rescore the file later without a model. Metrics go to `metrics.json` beside it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from skyeye.eval.suites import Item, Suite, read_items

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


def read_predictions(path: Path) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err}); delete the line to resume") from err
    return rows


def predict(model, suite: Suite, items: list[Item], root: Path, out: Path, batch_size: int,
            progress: bool = True, **generation) -> list[dict]:  # fmt: skip
    """Answers every item not yet in out/predictions.jsonl; returns all rows, in item order."""
    from tqdm import tqdm

    path = out / PREDICTIONS_FILE
    done = {row["id"]: row for row in read_predictions(path) if row.get("suite") == suite.name}
    pending = [item for item in items if item.id not in done]
    if done:
        say(f"resuming: {len(done):,} of {len(items):,} items already answered in {path}")
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(items), initial=len(items) - len(pending), desc=suite.name, unit=" items",
               disable=not progress)  # fmt: skip
    with path.open("a") as handle:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            images = [[str(root / image) for image in item.images] for item in batch]
            answers = model.ask_many(images, [i.prompt for i in batch], tasks=[i.task for i in batch],
                                     batch_size=batch_size, **generation)  # fmt: skip
            for item, answer in zip(batch, answers, strict=True):
                row = {"suite": suite.name, **asdict(item), "prediction": answer.text, "raw_prompt": answer.prompt}
                done[item.id] = row
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            bar.update(len(batch))
    bar.close()
    return [done[item.id] for item in items]


def score(suite: Suite, rows: list[dict], spice: bool = False) -> dict:
    """The suite's metrics on saved rows (fractions in 0..1); `spice` adds SPICE to captioning when it can run."""
    if not rows:
        raise ValueError(f"suite {suite.name}: no predictions to score")
    if suite.metric in ("captioning", "reg"):
        from skyeye.eval.captioning import caption_scores

        return caption_scores({r["id"]: r["reference"]["references"] for r in rows},
                              {r["id"]: r["prediction"] for r in rows}, spice=spice)  # fmt: skip
    if suite.metric == "vqa":
        from skyeye.eval.vqa import vqa_scores

        items = [{"prediction": r["prediction"], **r["reference"]} for r in rows]
        return vqa_scores(items, dataset=suite.dataset)
    if suite.metric == "grounding":
        from skyeye.eval.grounding import grounding_scores

        return grounding_scores([{"prediction": r["prediction"], **r["reference"]} for r in rows])
    from skyeye.eval.vqa import scene_accuracy

    return scene_accuracy([{"prediction": r["prediction"], "answer": r["reference"]["answer"]} for r in rows])


def run_suite(model, suite: Suite, root: Path, out: Path, split: str | None = None, limit: int | None = None,
              batch_size: int = 8, progress: bool = True, spice: bool = False, **generation) -> dict:  # fmt: skip
    items, rejects = read_items(suite, root, split)
    if rejects:
        reasons: dict[str, int] = {}
        for reject in rejects:
            reasons[reject.reason] = reasons.get(reject.reason, 0) + 1
        say(f"{suite.name}: {len(rejects):,} native items could not be read and are not scored: {reasons}")
    if not items:
        raise ValueError(f"suite {suite.name}: no items in split {split or suite.split} under {root}")
    items = items[:limit] if limit else items
    started = time.perf_counter()
    rows = predict(model, suite, items, root, out, batch_size, progress, **generation)
    seconds = time.perf_counter() - started
    metrics = score(suite, rows, spice)
    report = {"suite": suite.name, "split": split or suite.split, "items": len(rows), "unread": len(rejects),
              "seconds": round(seconds, 1), "metrics": metrics}  # fmt: skip
    (out / METRICS_FILE).write_text(json.dumps(report, indent=1))
    return report


def say(text: str) -> None:
    print(text, file=sys.stderr)
