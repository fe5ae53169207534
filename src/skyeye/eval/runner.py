"""`skyeye eval`: ask a model every item of a suite, save the answers, score them, print the paper's table.

Predictions are appended to `predictions.jsonl` batch by batch (one line per item: the prompt, the raw
answer and the reference), so an interrupted run resumes where it stopped and `skyeye eval score` can
rescore the file later without a model. `run.json` beside it says what produced them (see `record`), and a
run resumes only the identical run's answers. Metrics go to `metrics.json`, with the run.

Under `accelerate launch` (or torchrun) the processes share the items: whole batches go round-robin, each
process appends its answers to its own `predictions.partN.jsonl`, and at the end the main process merges
the parts into `predictions.jsonl` in item order and scores them. Batches hold the same items as in one
process, so the file and the metrics are those of a one-process run. Parts left by an interrupted run are
merged when it resumes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from skyeye import jsonl
from skyeye.eval.record import RUN_FILE, differences, read_run, run_identity, write_run
from skyeye.eval.suites import Item, Suite, read_items
from skyeye.processes import Processes, current_processes
from skyeye.prompts import Conversation

PREDICTIONS_FILE = "predictions.jsonl"
PART_FILE = "predictions.part{index}.jsonl"  # one process's answers in a run of several, until merged
METRICS_FILE = "metrics.json"
CAPTION_METRICS = ("captioning", "reg")  # scored by pycocoevalcap, whose tokenizer and METEOR run on Java
GREEDY = {"num_beams": 1, "do_sample": False}
ROW_KEYS = ("id", "prediction", "reference")


def load_predictions(path: Path) -> jsonl.JsonLines:
    """The rows of a predictions file; a corrupt line is an error naming it, unless it is the last one."""
    return jsonl.read(path, f"a prediction (a JSON object with {', '.join(ROW_KEYS)})", ROW_KEYS)


def read_predictions(path: Path) -> list[dict]:
    """The saved rows, for scoring; a truncated last line is left out, and said so."""
    saved = load_predictions(path)
    if saved.cut_line is not None:
        say(f"{path}:{saved.cut_line}: truncated last line (a run killed mid-write) left out")
    return saved.rows


def require_tools(suite: Suite) -> None:
    """Fails before any item is asked when the suite's metric cannot run here."""
    if suite.metric in CAPTION_METRICS:
        from skyeye.eval.captioning import require_java

        require_java()


def resume(out: Path, run: dict, restart: bool = False, order: dict[str, int] | None = None) -> dict[str, dict]:
    """The answers already saved in `out` by this same run; a fresh run.json when there are none.

    Answers of another run (other model, prompt style, split, decoding, limit or data) are refused with what
    differs, unless `restart` discards them. Parts left by an interrupted run of several processes are
    merged first, in item `order`.
    """
    path = out / PREDICTIONS_FILE
    if restart:
        for name in (PREDICTIONS_FILE, METRICS_FILE, RUN_FILE):
            (out / name).unlink(missing_ok=True)
        for part in part_files(out):
            part.unlink()
    saved = load_predictions(path)
    if part_files(out):
        _settle(path, saved)  # before the parts' rows are appended after it
        merge_parts(out, order or {})
        saved = load_predictions(path)
    if saved.rows:
        recorded = read_run(out)
        if recorded is None:
            raise ValueError(f"{path}: {len(saved.rows):,} saved predictions but no {RUN_FILE} says what produced "
                             "them (an older SkyEye, or a file copied in); pass --restart to discard them, or choose "
                             "another --out")  # fmt: skip
        changed = differences(recorded, run)
        if changed:
            raise ValueError(
                f"{out}: its {len(saved.rows):,} predictions come from another run ({'; '.join(changed)}); "
                "pass --restart to discard them, or choose another --out"
            )
    _settle(path, saved)
    if not saved.rows:
        write_run(out, run)
        return {}
    say(f"resuming: {len(saved.rows):,} of {run['items']['count']:,} items already answered in {path}")
    return {row["id"]: row for row in saved.rows}


def _settle(path: Path, saved: jsonl.JsonLines) -> None:
    if jsonl.settle(path):
        say(f"{path}:{saved.cut_line}: dropped 1 truncated last line (a run killed mid-write); asking its item again")
        saved.cut_line = None


def part_files(out: Path) -> list[Path]:
    return sorted(out.glob(PART_FILE.format(index="*")))


def merge_parts(out: Path, order: dict[str, int]) -> None:
    """Appends the rows of every part file to predictions.jsonl, in item `order` (unknown ids last), then
    deletes the parts; a part's truncated last line (a process killed mid-write) is left out, and said so."""
    path = out / PREDICTIONS_FILE
    parts = part_files(out)
    rows = []
    for part in parts:
        rows += read_predictions(part)
    rows.sort(key=lambda row: order.get(row["id"], len(order)))
    jsonl.settle(path)
    with path.open("a") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        handle.flush()
        os.fsync(handle.fileno())  # the parts go only once their rows are safely in the merged file
    for part in parts:
        part.unlink()


def predict(model, suite: Suite, items: list[Item], root: Path, out: Path, run: dict, batch_size: int,
            progress: bool = True, restart: bool = False, processes: Processes | None = None,
            **generation) -> list[dict] | None:  # fmt: skip
    """Answers every item of `run` (`record.run_identity`) not yet in out/predictions.jsonl; all rows, in order.

    With several `processes`, each answers its share of the batches; the main process merges them and gets
    all rows, the others None.
    """
    from tqdm import tqdm

    processes = processes or Processes()
    path = out / PREDICTIONS_FILE
    order = {item.id: index for index, item in enumerate(items)}
    if processes.is_main:
        done = resume(out, run, restart, order)
    processes.wait()  # the folder is settled: every process reads the same saved answers
    if not processes.is_main:
        done = {row["id"]: row for row in load_predictions(path).rows}
    pending = [item for item in items if item.id not in done]
    # Whole batches, round-robin: each batch holds the items it would hold in one process, so the same answers.
    starts = range(0, len(pending), batch_size)
    mine = [item for k, start in enumerate(starts) if k % processes.count == processes.index
            for item in pending[start : start + batch_size]]  # fmt: skip
    own = path if processes.count == 1 else out / PART_FILE.format(index=processes.index)
    bar = tqdm(total=len(mine), desc=suite.name, unit=" items", disable=not progress or not processes.is_main)
    images = [[str(root / image) for image in item.images] for item in mine]
    histories = opened(model, suite.opening, images, batch_size, **generation) if suite.opening else None
    answered = model.iter_answers(images, [i.prompt for i in mine], tasks=[i.task for i in mine],
                                  histories=histories, batch_size=batch_size, **generation)  # fmt: skip
    with own.open("a") as handle:
        for start, answers in zip(range(0, len(mine), batch_size), answered, strict=True):
            for number, (item, answer) in enumerate(zip(mine[start : start + batch_size], answers, strict=True)):
                row = {"suite": suite.name, **asdict(item), "prediction": answer.text, "raw_prompt": answer.prompt}
                if histories:
                    row["opening"] = asdict(histories[start + number].turns[0])
                done[item.id] = row
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            bar.update(len(answers))
    bar.close()
    if processes.count > 1:
        processes.wait()
        if not processes.is_main:
            return None
        merge_parts(out, order)
        done = {row["id"]: row for row in load_predictions(path).rows}
    return [done[item.id] for item in items]


def opened(model, opening: str, images: list[list[str]], batch_size: int, **generation) -> list[Conversation]:
    """For each item's images, a conversation holding `opening` and the model's own answer to it; asked once
    per distinct image, as a chat user would ask it first."""
    distinct = list(dict.fromkeys(tuple(paths) for paths in images))
    asked = model.iter_answers([list(p) for p in distinct], [opening] * len(distinct), tasks=[None] * len(distinct),
                               batch_size=batch_size, **generation)  # fmt: skip
    answers = [answer for batch in asked for answer in batch]
    by_images = {paths: answer.text for paths, answer in zip(distinct, answers, strict=True)}
    return [Conversation(len(paths)).ask(opening).answer(by_images[tuple(paths)]) for paths in images]


def score(suite: Suite, rows: list[dict], spice: bool = False) -> dict:
    """The suite's metrics on saved rows (fractions in 0..1); `spice` adds SPICE to captioning when it can run."""
    if not rows:
        raise ValueError(f"suite {suite.name}: no predictions to score")
    if suite.metric in CAPTION_METRICS:
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

    return scene_accuracy([{"prediction": r["prediction"], **r["reference"]} for r in rows])


def run_suite(model, suite: Suite, root: Path, out: Path, split: str | None = None, limit: int | None = None,
              batch_size: int = 8, progress: bool = True, spice: bool = False, restart: bool = False,
              model_source: str | None = None, **generation) -> dict | None:  # fmt: skip
    """Asks, saves and scores; `restart` discards another run's answers in `out`, `model_source` labels the model.
    Under a launch of several processes, only the main one returns the report (the others None)."""
    from skyeye.model.answer import DEFAULT_LISTED_ONLY, DEFAULT_MAX_NEW_TOKENS, DEFAULT_REFINE_BOXES

    require_tools(suite)
    split = split or suite.split
    processes = current_processes()
    if processes.is_main:  # first, alone: a synthetic suite renders its scenes while reading
        items, rejects = read_items(suite, root, split)
    processes.wait()
    if not processes.is_main:
        items, rejects = read_items(suite, root, split)
    if rejects and processes.is_main:
        reasons: dict[str, int] = {}
        for reject in rejects:
            reasons[reject.reason] = reasons.get(reject.reason, 0) + 1
        say(f"{suite.name}: {len(rejects):,} native items could not be read and are not scored: {reasons}")
    if not items:
        raise ValueError(f"suite {suite.name}: no items in split {split} under {root}")
    items = items[:limit] if limit else items
    # Every setting the answers depend on is passed explicitly, so that run.json records what was used.
    decoding = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **GREEDY, "listed_only": DEFAULT_LISTED_ONLY,
                "refine_boxes": DEFAULT_REFINE_BOXES, **generation}  # fmt: skip
    run = run_identity(suite.name, split, limit, items, model, model_source, decoding, suite.opening)
    started = time.perf_counter()
    rows = predict(model, suite, items, root, out, run, batch_size, progress, restart, processes, **decoding)
    if rows is None:
        return None
    seconds = time.perf_counter() - started
    metrics = score(suite, rows, spice)
    report = {"suite": suite.name, "split": split, "items": len(rows), "unread": len(rejects),
              "seconds": round(seconds, 1), "run": run, "metrics": metrics}  # fmt: skip
    (out / METRICS_FILE).write_text(json.dumps(report, indent=1))
    return report


def say(text: str) -> None:
    print(text, file=sys.stderr)
