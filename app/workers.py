"""Which device each gunicorn worker owns: one worker per GPU, or --workers copies on a CPU.

Many GPUs in one process would share one interpreter lock (the batch loop is Python between kernel launches), and
every extra worker would load a full copy onto every GPU. So with --device auto (or cuda) and N GPUs, gunicorn runs
N workers and worker i owns cuda:i; a worker that dies is replaced by one that takes over its GPU. GPUs are counted
in a child process, so gunicorn's master never initialises CUDA. Imported by gunicorn.conf.py: no torch here.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

_COUNT = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


def count_gpus(timeout: float = 120) -> int:
    try:
        done = subprocess.run([sys.executable, "-c", _COUNT], capture_output=True, text=True, timeout=timeout)
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


@dataclass(frozen=True)
class WorkerLayout:
    workers: int
    devices: tuple[str, ...] = ()  # the device of each worker; empty: every worker uses the configured device

    def assign(self, taken: set[str]) -> str | None:
        """The device for a new worker: the first one no live worker owns."""
        return next((d for d in self.devices if d not in taken), None)


def wants_every_gpu(device: str) -> bool:
    return device.strip().lower() in ("auto", "cuda")


def layout(device: str, workers: int, gpus: int) -> WorkerLayout:
    if wants_every_gpu(device) and gpus > 0:
        return WorkerLayout(gpus, tuple(f"cuda:{i}" for i in range(gpus)))
    return WorkerLayout(max(1, workers))
