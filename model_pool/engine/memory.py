"""How many batch slots fit a device: planned at load, against the memory left after the weights and the codec.

Each slot holds one row's keys and values for the whole context (prompt + max_new_tokens): on the real model
(28 layers, 8 KV heads of 128, bf16) that is 112 KiB a token, about 0.9 GiB a slot at 8192 tokens. The plan keeps
a reserve for activations (prefill chunks, logits, CUDA graph pools) and takes as many slots as requested, or as
fit; when not even one fits, loading stops with a message that says what to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError

log = logging.getLogger(__name__)

GIB = 1024**3
RESERVE_BYTES = {"cuda": 2 * GIB, "cpu": 1 * GIB}


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    slots: int  # per instance
    requested: int
    context_tokens: int
    slot_bytes: int
    free_bytes: int | None  # None: the device does not say (every requested slot is taken)
    reserve_bytes: int

    def describe(self) -> str:
        free = "unknown" if self.free_bytes is None else f"{self.free_bytes / GIB:.1f} GiB"
        capped = "" if self.slots == self.requested else f" (of {self.requested} requested: that is what fits)"
        return (f"{self.device}: {self.slots} batch slot(s) per instance{capped}, {self.context_tokens} tokens each, "
                f"{self.slot_bytes / GIB:.2f} GiB a slot; free {free}, reserve {self.reserve_bytes / GIB:.1f} GiB")


def plan_slots(device: str, free_bytes: int | None, token_bytes: int, context_tokens: int, requested: int,
               instances: int = 1, reserve_bytes: int | None = None) -> MemoryPlan:
    """Slots per instance for `instances` instances sharing one device's `free_bytes`."""
    kind = device.split(":")[0]
    reserve = RESERVE_BYTES.get(kind, 0) if reserve_bytes is None else reserve_bytes
    slot_bytes = token_bytes * (context_tokens + 1)
    if free_bytes is None:
        return MemoryPlan(device, requested, requested, context_tokens, slot_bytes, None, reserve)
    fit = max(0, free_bytes - reserve) // (slot_bytes * instances)
    if fit < 1:
        raise ModelLoadError(
            f"not enough memory on {device} for one batch slot: {free_bytes / GIB:.1f} GiB free after loading the "
            f"model, {reserve / GIB:.1f} GiB kept in reserve, and one slot of {context_tokens} tokens needs "
            f"{slot_bytes / GIB:.2f} GiB per instance ({instances} instance(s)). Lower --max-context-tokens, use "
            f"fewer --instances-per-device, or a device with more memory.")
    return MemoryPlan(device, int(min(requested, fit)), requested, context_tokens, slot_bytes, free_bytes, reserve)


def free_memory(device: torch.device) -> int | None:
    """Bytes the device can still give: CUDA's own count, the kernel's MemAvailable on a Linux CPU, else None."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.exists():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None
