"""What produced a predictions file: `run.json` beside it, written before the first prediction.

A run is the suite, split and limit, a digest of the items asked (ids, images, prompts and references: what
the data under --data-root and the suite's prompts make), the model's fingerprint, the prompt style, the
decoding settings, and a suite's `opening` where it has one. Answers are resumed only for the identical run.
The model's source and name are labels, recorded but not compared: the same weights loaded from another
folder are the same model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from skyeye.eval.suites import Item

RUN_FILE = "run.json"
MAX_RUN_FILE_BYTES = 1 << 20
LABELS = ("model.source", "model.name")


def run_identity(suite: str, split: str, limit: int | None, items: list[Item], model, model_source: str | None,
                 decoding: dict, opening: str | None = None) -> dict:  # fmt: skip
    from skyeye.model.fingerprint import model_fingerprint

    identity = {
        "suite": suite,
        "split": split,
        "limit": limit,
        "items": {"count": len(items), "digest": _digest([asdict(item) for item in items])},
        "model": {"source": model_source, "name": model.cfg.name, "fingerprint": model_fingerprint(model)},
        "prompt_style": model.cfg.prompt_style,
        "decoding": decoding,
    }
    if opening:  # absent otherwise, so runs recorded before suites had openings still resume
        identity["opening"] = opening
    return json.loads(json.dumps(identity))  # plain JSON values, so that it compares equal to a saved one


def differences(saved: dict, current: dict) -> list[str]:
    """One phrase per setting that differs, e.g. "split: 'test' there, 'train' now"; labels are not compared."""
    before, after = _flatten(saved), _flatten(current)
    changed = []
    for key in sorted(set(before) | set(after)):
        if key in LABELS or before.get(key) == after.get(key):
            continue
        if key == "model.fingerprint":
            changed.append(f"model: {describe_model(saved)} there, {describe_model(current)} now")
        elif key == "items.digest":
            changed.append("items: other questions, images or references (the data under --data-root changed)")
        else:
            changed.append(f"{key}: {before.get(key, 'not recorded')!r} there, {after.get(key, 'not recorded')!r} now")
    return changed


def describe_model(run: dict) -> str:
    model = run.get("model") or {}
    label = model.get("source") or model.get("name") or "?"
    return f"{label} (fingerprint {model.get('fingerprint', '?')})"


def describe_run(run: dict | None) -> str:
    """One line naming what produced a result: model, prompt style and decoding."""
    if run is None:
        return f"produced by: unknown (no {RUN_FILE} beside the predictions)"
    decoding = ", ".join(f"{key}={value}" for key, value in (run.get("decoding") or {}).items())
    return f"produced by: model {describe_model(run)}, prompt style {run.get('prompt_style', '?')}; {decoding}"


def write_run(folder: Path, run: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{RUN_FILE}.partial"
    partial.write_text(json.dumps(run, indent=1))
    os.replace(partial, folder / RUN_FILE)


def read_run(folder: Path) -> dict | None:
    """The run recorded in `folder`, or None when there is none."""
    path = folder / RUN_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_RUN_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_RUN_FILE_BYTES:,} bytes; not a run record")
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(run, dict):
        raise ValueError(f"{path}: not a run record (a JSON object)")
    return run


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _flatten(value: dict, prefix: str = "") -> dict:
    flat = {}
    for key, inner in value.items():
        if isinstance(inner, dict):
            flat.update(_flatten(inner, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = inner
    return flat
