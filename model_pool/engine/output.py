"""One step's report to per-row results, and the one place where a row ends.

The report [slots, codebooks + 3] comes to the host once per step (frame codes, emit, finished, bad). It is read as
one NumPy array and each row's frame is a NumPy row of it, so handing out a step costs per-row Python only, no
torch op (consumers stack frames into a tensor once per piece of audio they decode). Every way a row ends, finished, failed, cancelled or abandoned, goes through `end`: it leaves the
scheduler, its slot is released on the device, and its reader is told (the end marker, or the error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import GenerationFailed
from .sampling import REPORT_BAD, REPORT_EMIT, REPORT_FINISHED

log = logging.getLogger(__name__)

END = object()  # a row's reader sees this after its last step


@dataclass
class Step:
    index: int  # 0-based decode step (the number of generated tokens is index + 1)
    frame: np.ndarray | None  # a complete frame [codebooks] of int64 codes (delay reverted), when one completed


class OutputProcessor:
    def __init__(self, scheduler, model_runner, num_codebooks: int, name: str):
        self.scheduler, self.model_runner = scheduler, model_runner
        self.K = num_codebooks
        self.name = name

    def end(self, row, outcome=END, scrub: bool = False, freed: list[int] | None = None) -> None:
        """Take the row out and tell its reader: END, or the error. Once per row; later calls do nothing. Its slot
        is released on the device now, or added to `freed` for the caller to release with others at once."""
        if row.ended:
            return
        slot = self.scheduler.leave(row)
        if slot is not None:
            if freed is None:
                self.model_runner.release([slot], scrub)
            else:
                freed.append(slot)
        row.out.put(outcome)

    def deliver(self, rows: list, report: torch.Tensor) -> None:
        """Hand each row of a step its line of the report (one line per slot)."""
        lines = report.numpy()
        K = self.K
        freed: list[int] = []
        for row in rows:
            if row.ended:  # left while this step ran (cancelled, failed): its step is not delivered
                continue
            line = lines[row.slot]
            if line[REPORT_BAD]:
                log.error("row on %s produced non-finite scores at step %d", self.name, row.steps)
                self.end(row, GenerationFailed("generation failed: the model produced invalid scores"), scrub=True)
                continue
            frame = line[:K].copy() if line[REPORT_EMIT] else None
            row.out.put(Step(row.steps, frame))
            row.steps += 1
            if line[REPORT_FINISHED]:
                self.end(row, freed=freed)
        self.model_runner.release(freed)
