"""Training checkpoints that survive a crash at any moment.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` with the trainable weights (safetensors), the
optimizer and scheduler states, the data position and every RNG state. It is written under a `.partial`
name and renamed into place only when complete, and `checkpoints/latest` (a one-line file, itself replaced
atomically) is updated last: a crash mid-write leaves the previous checkpoint as the latest, intact.

A run folder may come from anyone, so its `.pt` files hold nothing but tensors and plain data (numbers,
strings, lists, dicts) and are read with `torch.load(weights_only=True)`: a pickle that would build any other
object, and so could run code, is refused unread.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from skyeye import atomic

LATEST = "latest"
TRAINABLE_FILE, OPTIMIZER_FILE, SCHEDULER_FILE = "trainable.safetensors", "optimizer.pt", "scheduler.pt"
# Checkpoints written before the RNG states were plain data hold numpy's as an array of numbers; rebuilding
# one runs no code, so these numpy types (and no others) may be read too.
NUMPY_ARRAY = [np.dtype, np.ndarray, type(np.dtype(np.uint32)),
               (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct]  # fmt: skip


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # data position of the next global batch
    batch: int = 0
    samples: int = 0
    tokens: int = 0


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    """Every RNG state as tensors and plain data."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
             "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}  # fmt: skip
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    if isinstance(numpy, dict):  # else numpy's own tuple, from a checkpoint written before (see NUMPY_ARRAY)
        keys = numpy["keys"].numpy().astype(np.uint32)
        numpy = (numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"])
    np.random.set_state(numpy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def partial_path(folder: Path, step: int) -> Path:
    return atomic.partial_of(Path(folder) / "checkpoints" / f"step-{step:07d}")


def write_partial(folder: Path, model, optimizer, scheduler, progress: Progress) -> Path:
    """The shared part of a checkpoint (rank 0 writes it); every rank then adds its RNG state."""
    partial = atomic.begin_folder(Path(folder) / "checkpoints" / f"step-{progress.step:07d}")
    save_file(trainable_state(model), partial / TRAINABLE_FILE)
    torch.save(optimizer.state_dict(), partial / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), partial / SCHEDULER_FILE)
    write_progress(partial, progress)
    return partial


def write_progress(folder: Path, progress: Progress) -> None:
    (folder / "progress.json").write_text(json.dumps(asdict(progress)))


def read_progress(checkpoint: Path) -> Progress:
    return Progress(**json.loads((checkpoint / "progress.json").read_text()))


def rng_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"rng-{rank}.pt"


def save_rng(partial: Path, rank: int) -> None:
    torch.save(rng_state(), rng_file(partial, rank))


def publish(partial: Path, keep: int) -> Path:
    """Renames a complete `.partial` folder into place, points `latest` at it and prunes old checkpoints."""
    root = partial.parent
    final = atomic.publish_folder(partial)
    atomic.write_text(root / LATEST, final.name + "\n")
    for old in sorted(root.glob("step-???????"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest(folder: Path) -> Path | None:
    pointer = Path(folder) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    checkpoint = pointer.parent / pointer.read_text().strip()
    return checkpoint if checkpoint.is_dir() else None


def load(checkpoint: Path, model, optimizer, scheduler, rank: int = 0) -> Progress:
    model.load_state_dict(read_trainable(checkpoint, model), strict=False)
    optimizer.load_state_dict(load_plain(checkpoint / OPTIMIZER_FILE))
    scheduler.load_state_dict(load_plain(checkpoint / SCHEDULER_FILE))
    if rng_file(checkpoint, rank).is_file():
        load_rng(rng_file(checkpoint, rank))
    return read_progress(checkpoint)


def read_trainable(checkpoint: Path, model) -> dict[str, torch.Tensor]:
    """The checkpoint's trainable weights, checked against the names and shapes of `model`'s."""
    expected = {name: p for name, p in model.named_parameters() if p.requires_grad}
    return read_run_weights(checkpoint / TRAINABLE_FILE, expected)


def read_run_weights(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A safetensors file of a run folder, which must hold exactly the `expected` names and shapes (the
    checkpoint loader's checks); a damaged file or a mismatch is an error naming the file."""
    from safetensors import SafetensorError

    from skyeye.model.checkpoint import CheckpointError, read_weights

    try:
        return read_weights(path, expected)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file, truncated or damaged? ({first_line(err)})") from err
    except CheckpointError as err:
        raise ValueError(f"{err} (was the run's `trainable` or model changed since it was saved?)") from err


def load_rng(path: Path) -> None:
    saved = load_plain(path)
    try:
        set_rng_state(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a SkyEye RNG state ({first_line(err)})") from err


def load_plain(path: Path):
    """The tensors and plain data saved in `path` by torch.save; a file asking for anything else is refused
    before any of it is built."""
    try:
        with torch.serialization.safe_globals(NUMPY_ARRAY):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(err))
        if wanted is None:  # not a pickle at all
            raise ValueError(f"{path}: not a readable torch file, truncated or damaged?") from err
        raise ValueError(f"{path}: refused: holds more than tensors and plain data (it asks for "
                         f"{wanted.group(1)}); a crafted file could run code") from err  # fmt: skip
    except (KeyError, EOFError, OSError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable torch file, truncated or damaged? ({first_line(err)})") from err


def first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
