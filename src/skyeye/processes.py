"""The processes of one run under `accelerate launch` (or torchrun): which one this is, and a barrier.

A plain `python` / `skyeye` process is process 0 of 1 and never imports accelerate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Processes:
    index: int = 0
    count: int = 1
    state: object | None = None  # accelerate's PartialState when several processes run

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def wait(self) -> None:
        """Returns once every process has reached this call (the same number of times in each)."""
        if self.state is not None:
            self.state.wait_for_everyone()


def current_processes() -> Processes:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # Without cpu=True accelerate ignores a launch on a machine without GPUs (no gloo group).
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state)
