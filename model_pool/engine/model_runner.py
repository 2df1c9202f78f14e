"""The device side of the batch: executes what the scheduler decided, on static buffers, and knows no requests.

It owns the slot cache, the sampler's per-slot state and the buffers the decode step reads and writes (the last
step's codes and logits). Per iteration: `prefill` runs the prompt pieces in one forward (prefill.py) and leaves
the logits of each completed prompt in its slot; `join` resets the joining slots' state with a few batched writes;
`draw` fills the noise blocks that run out (one op per row per block); `step` launches the decode step, which
selects every slot's codes from the logits (sampling, RAS, the delay pattern and the stream end, sampling.py),
feeds them through the model and keeps the new logits, all in one compiled graph, and starts the one copy of its
report to the host. The report is read later (`Report.wait`), so the host can hand out the previous step while the
device runs this one.
"""

from __future__ import annotations

import itertools
import types

import torch

from ..defaults import MAX_RAS_WINDOW
from .geometry import CodeGeometry
from .prefill import pack, prefill
from .sampling import BatchSampler, Needs
from .slot_cache import SlotCache, decode_step

NOISE_AHEAD = 16  # decode steps of noise drawn at once per row (one op per row per block)


def _own_code(method):
    """The bound method with a code object of its own. torch.compile caches graphs per code object: a second engine
    instance (a pool of two, a test's engines) would otherwise be a recompile of the first one's graph, guarded on
    the first one's buffers, made dynamic in every size that differs, and past the recompile limit left eager."""
    fn = method.__func__
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{next(_INSTANCES)}")
    return types.MethodType(types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                                               fn.__closure__), method.__self__)


_INSTANCES = itertools.count()


def slot_buckets(slots: int) -> tuple[int, ...]:
    """The slot counts the compiled step runs: powers of two from 2, ending with every slot (one graph, the slot
    count symbolic; a size of 1 would be specialised, so the smallest is 2)."""
    buckets, size = [], 2
    while size < slots:
        buckets.append(size)
        size *= 2
    return (*buckets, slots)


class Report:
    """One step's report [slots, codebooks + 3] on its way to the host."""

    def __init__(self, read):
        self._read = read

    def wait(self) -> torch.Tensor:
        return self._read()


class HostTransfer:
    """The step's report, copied to the host once. On CUDA the copy goes to pinned memory without blocking, into one
    of two buffers (the host reads step n's while step n + 1 copies into the other) and an event marks its end, so
    the host waits only when it reads; the graph's own output is then free to be overwritten by the next replay."""

    def __init__(self, device: torch.device, slots: int, width: int, counters):
        self.cuda = device.type == "cuda"
        self.counters = counters
        if self.cuda:
            self.buffers = [torch.zeros((slots, width), dtype=torch.long, pin_memory=True) for _ in range(2)]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
            self.turn = 0

    def start(self, report: torch.Tensor) -> Report:
        self.counters.transfers += 1
        if not self.cuda:
            return Report(lambda: report)
        turn, self.turn = self.turn, 1 - self.turn
        host, event = self.buffers[turn][: report.shape[0]], self.events[turn]
        host.copy_(report, non_blocking=True)
        event.record()

        def wait() -> torch.Tensor:
            event.synchronize()
            return host.clone()

        return Report(wait)


class ModelRunner:
    def __init__(self, model, geometry: CodeGeometry, device: torch.device, slots: int, context_tokens: int,
                 compile: bool, counters):
        self.model, self.geometry, self.device = model, geometry, device
        self.slots, self.compiled = slots, compile
        K, V = geometry.num_codebooks, geometry.codebook_size
        self.cache = SlotCache(model, slots, context_tokens, device, model.dtype)
        self.sampler = BatchSampler(slots, K, V, geometry.bos_id, geometry.eos_id, device, history=MAX_RAS_WINDOW,
                                    ahead=NOISE_AHEAD)
        self.codes = torch.zeros((slots, K), dtype=torch.long, device=device)
        self.logits = torch.zeros((slots, K, V), dtype=torch.float32, device=device)
        for tensor in (self.codes, self.logits):
            torch._dynamo.mark_static_address(tensor)
        self.transfer = HostTransfer(device, slots, K + 3, counters)
        self.slot_buckets = slot_buckets(slots)
        self._step = self._make_step(compile)

    # ---- joining -------------------------------------------------------------------------------------------
    def prefill(self, pieces) -> None:
        """pieces: (prompt, slot, start, stop). The completed prompts' logits land in their slots."""
        packed = pack(pieces, self.device)
        logits = prefill(self.model, self.cache, packed)
        if packed.last.shape[0]:
            done = packed.piece_slots.index_select(0, packed.piece.index_select(0, packed.last))
            self.logits.index_copy_(0, done, logits.view(-1, *self.logits.shape[1:]).float())

    def join(self, slots: list[int], lengths: list[int], params: list) -> None:
        """The prefilled rows in `slots` decode from the next step on."""
        self.sampler.admit_many(slots, params)
        index = torch.tensor(slots, device=self.device)
        self.cache.start(index, torch.tensor(lengths, device=self.device))

    def release(self, slots: list[int], scrub: bool = False) -> None:
        if slots:
            self.cache.release(slots, scrub)
            self.sampler.release(slots)

    def reset(self) -> None:
        self.cache.reset()
        self.sampler.active.zero_()

    def draw(self, slot: int, random, step: int) -> None:
        self.sampler.draw_noise(slot, random, step)

    # ---- one decode step -----------------------------------------------------------------------------------
    def step(self, longest: int, highest_slot: int, params: list) -> Report:
        """Launch one decode step for the decoding slots (`longest`: the most tokens any of them will hold; `params`:
        their sampling parameters, which the eager step uses to skip work none of them needs)."""
        window = self.cache.window(longest)
        # Slots past the highest occupied one: eager runs none of them. The compiled graph runs every slot through
        # the linear layers (fixed shapes: a row's codes never depend on how many rows there are, and reading the
        # weights costs the same for 2 rows as for 64) but attends only up to the smallest slot bucket that holds
        # the highest occupied slot (an idle slot would cost its whole window's keys and values every step).
        used = next(b for b in self.slot_buckets if b > highest_slot) if self.compiled else highest_slot + 1
        rows = self.cache.rows[:used]
        if self.compiled:
            return self.transfer.start(self._step(self.codes, self.logits, window, rows))
        needs = Needs.of(params, self.geometry.codebook_size, self.sampler.R)
        return self.transfer.start(self._step(self.codes, self.logits, window, rows, needs))

    def _fused(self, codes: torch.Tensor, logits: torch.Tensor, window: torch.Tensor, rows: torch.Tensor,
               needs: Needs | None = None) -> torch.Tensor:
        """Select the codes from the last logits, feed them through the model, keep the new logits; the report.
        Attention runs over the first `rows.shape[0]` slots (a symbolic size when compiled); the rest runs over
        every slot when compiled, over those same slots when eager."""
        attend = rows.shape[0]
        slots = self.slots if self.compiled else attend
        selection = self.sampler.advance(slots, logits[:slots], needs)
        codes[:slots].copy_(selection.codes)
        new = decode_step(self.model, self.cache, codes, window, slots, attend)
        logits[:slots].copy_(new.view(slots, *logits.shape[1:]))
        return selection.report

    def _make_step(self, compile: bool):
        if not compile:
            return self._fused
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        return torch.compile(_own_code(self._fused), mode=mode, fullgraph=True)

    def warm_up(self) -> None:
        """Run (and, with compile, compile and capture) the step for every window size before the first request,
        with every slot empty: no request pays for a first call."""
        with torch.inference_mode():
            for used in self.slot_buckets if self.compiled else (self.slots,):
                rows = self.cache.rows[:used]
                if self.compiled and len(self.slot_buckets) > 1:
                    torch._dynamo.mark_dynamic(rows, 0, min=2, max=self.slots)
                for size in self.cache.buckets:
                    window = self.cache.columns[:size]
                    if self.compiled:
                        torch._dynamo.mark_dynamic(window, 0)
                    for _ in range(3 if self.compiled else 1):
                        self._step(self.codes, self.logits, window, rows)
            self.reset()
