"""The batch loop of one engine instance: joins, decode steps, sampling, frames. A row that fails, fails alone.

A decode step reads every weight once whatever the batch size, so decoding 8 requests together costs little more
than 1. One thread per instance runs the loop. Each iteration:
  1. prefills waiting prompts, at most `prefill_chunk` tokens (the whole prompt when nothing else runs), so a long
     prompt delays the running rows by a bounded amount; a prompt that is done joins a free slot;
  2. draws each active row's noise with its own generator, and selects every row's codes at once on the device;
  3. starts the one device-to-host copy of the step's report (frames, finished and failure flags);
  4. launches the next forward (the step's codes are already on the device), then reads the report while the
     device computes, and hands each row its step.
A failure while a row is prefilled, joins, draws its noise or is sampled (or produces non-finite scores) fails that
row only; the others continue with exactly the codes they would produce alone. Only a failure of the batched
forward itself, which no single row owns, fails every running row.

Two seams for tests and diagnostics, and nothing else reads the loop's internals: `counters` (steps, the most rows
seen in one step, host transfers) and `stage_hook(stage, row)`, called before each row's "prefill", "join", "noise"
and "sample" stage and after each step's forward ("logits", with the row's logits in `runner.logits[row.slot]`).
A hook that raises there is a fault of that stage, for that row.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch

from ..defaults import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_CONTEXT_TOKENS,
    DEFAULT_PREFILL_CHUNK,
    MAX_RAS_WINDOW,
    MIN_TEMPERATURE,
)
from ..errors import GenerationFailed
from ..request import SamplingParams
from .geometry import CodeGeometry
from .sampling import REPORT_BAD, REPORT_EMIT, REPORT_FINISHED, BatchSampler, Selection, row_generator
from .slot_cache import SlotCache, decode_step

log = logging.getLogger(__name__)

_END = object()


@dataclass
class Step:
    index: int  # 0-based decode step (the number of generated tokens is index + 1)
    frame: torch.Tensor | None  # a complete frame [codebooks] on the CPU (delay reverted), when one completed


@dataclass(eq=False)
class _Row:
    prompt: object  # EncodedPrompt
    params: SamplingParams
    cancel: threading.Event | None
    generator: object  # sampling.RowRandom: its generators and its prompt's RAS context
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: threading.Event = field(default_factory=threading.Event)
    slot: int | None = None
    prefill: object | None = None  # the DynamicCache being filled, while the prompt is prefilled in chunks
    prefilled: int = 0  # prompt tokens prefilled so far
    logits: torch.Tensor | None = None  # [codebooks, vocab] after the whole prompt
    steps: int = 0  # decode steps delivered

    @property
    def length(self) -> int:
        """Tokens in the row's cache: its prompt, then one per step."""
        return int(self.prompt.input_ids.shape[0]) + self.steps

    def stopped(self) -> bool:
        return self.abandoned.is_set() or (self.cancel is not None and self.cancel.is_set())


@dataclass
class Counters:
    """What the loop has done, for tests and diagnostics (nothing in the loop reads them)."""

    steps: int = 0  # batched decode steps
    max_rows: int = 0  # the most rows that shared one step
    transfers: int = 0  # device-to-host copies of a step's report

    def reset(self) -> None:
        self.steps = self.max_rows = self.transfers = 0


class HostTransfer:
    """The step's report, copied to the host once. On CUDA the copy goes to pinned memory without blocking and an
    event marks its end, so the host waits only when it reads (after the next forward has been launched)."""

    def __init__(self, device: torch.device, slots: int, width: int, counters: Counters):
        self.cuda = device.type == "cuda"
        self.counters = counters
        if self.cuda:
            self.buffer = torch.zeros((slots, width), dtype=torch.long, pin_memory=True)
            self.event = torch.cuda.Event()

    def start(self, report: torch.Tensor):
        self.counters.transfers += 1
        if not self.cuda:
            return lambda: report
        host = self.buffer[: report.shape[0]]
        host.copy_(report, non_blocking=True)
        self.event.record()

        def wait() -> torch.Tensor:
            self.event.synchronize()
            return host.clone()

        return wait


class BatchRunner:
    def __init__(self, model, geometry: CodeGeometry, device: torch.device, name: str = "engine",
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
                 compile: bool = False, prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK):
        self.model = model
        self.geometry = geometry
        self.device = device
        self.name = name
        self.max_batch_size = max(1, max_batch_size)
        self.context_tokens = context_tokens
        self.prefill_chunk = prefill_chunk or None
        self.compiled = compile
        slots, K, V = self.max_batch_size, geometry.num_codebooks, geometry.codebook_size
        self.cache = SlotCache(model, slots, context_tokens, device, model.dtype)
        self.sampler = BatchSampler(slots, K, V, geometry.bos_id, geometry.eos_id, device, history=MAX_RAS_WINDOW)
        self.codes = torch.zeros((slots, K), dtype=torch.long, device=device)
        torch._dynamo.mark_static_address(self.codes)
        self.logits = torch.zeros((slots, K, V), dtype=torch.float32, device=device)
        self.counters = Counters()
        self.stage_hook: Callable[[str, _Row], None] | None = None
        self.transfer = HostTransfer(device, slots, K + 3, self.counters)
        self._slots: list[_Row | None] = [None] * slots
        self._rows_index: tuple[list[int], torch.Tensor] | None = None  # occupied slots, as a device index
        self._waiting: deque[_Row] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._step = self._make_step(compile)
        self._warm_up()

    # ---- request side ----------------------------------------------------------------------------------
    def submit(self, prompt, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[Step]:
        """The prompt must fit the context with its max_new_tokens (the service measures it before any work)."""
        generator = row_generator(params, prompt, self.device)
        row = _Row(prompt, params, cancel, generator)
        with self._cond:
            self._waiting.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"batch-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()
        return self._results(row)

    @staticmethod
    def _results(row: _Row) -> Iterator[Step]:
        try:
            while True:
                item = row.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if row.stopped():
                    return  # the loop drops the row before its next step
        finally:
            row.abandoned.set()

    @property
    def active(self) -> int:
        with self._cond:
            return sum(r is not None for r in self._slots) + len(self._waiting)

    # ---- the loop --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not any(self._slots):
                    self._cond.wait()
            try:
                with torch.inference_mode():
                    self._iterate()
            except BaseException as exc:  # noqa: BLE001 - a bug in the loop: every waiting request must hear of it
                log.exception("batch loop failed on %s", self.name)
                with self._cond:
                    rows = [r for r in self._slots if r is not None] + list(self._waiting)
                    self._waiting.clear()
                for row in rows:
                    self._leave(row, exc, scrub=True)
                self.cache.reset()

    def _iterate(self) -> None:
        for row in [r for r in self._slots if r is not None and r.stopped()]:
            self._leave(row, _END)
        self._prefill_waiting()
        rows = [r for r in self._slots if r is not None]
        if rows:
            self._step_rows(rows)

    # ---- joining ---------------------------------------------------------------------------------------
    def _prefill_waiting(self) -> None:
        """Prefill the waiting prompts in order, within this iteration's token budget, while slots are free."""
        budget = self.prefill_chunk
        while True:
            with self._cond:
                if not self._waiting or None not in self._slots:
                    return
                row = self._waiting[0]
                running = any(r is not None for r in self._slots)
                if row.stopped():
                    self._waiting.popleft()
                    row.out.put(_END)
                    continue
            try:
                self._stage("prefill", row)
                used = self._prefill(row, budget if running else None)
                if row.logits is not None:
                    with self._cond:
                        self._waiting.popleft()
                    self._join(row)
            except Exception as exc:  # noqa: BLE001 - this row's prompt or cache failed: this row alone fails
                log.exception("row failed while joining on %s", self.name)
                with self._cond:
                    if self._waiting and self._waiting[0] is row:
                        self._waiting.popleft()
                self._leave(row, exc, scrub=True)
                continue
            if running and budget is not None:
                budget -= used
                if budget <= 0:
                    return

    def _prefill(self, row: _Row, budget: int | None) -> int:
        """Prefill the next piece of the row's prompt (at most `budget` tokens); returns the tokens used."""
        from transformers import DynamicCache

        model, device = self.model, self.device
        prompt = row.prompt
        total = prompt.input_ids.shape[0]
        if row.prefill is None:
            row.prefill = DynamicCache(config=model.config)
        start = row.prefilled
        stop = total if budget is None else min(total, start + budget)
        kwargs = {}
        first, last = prompt.audio_before(start), prompt.audio_before(stop)
        if last > first:
            kwargs["audio_input_ids"] = prompt.audio_ids[first:last].to(device).unsqueeze(0)
        out = model(input_ids=prompt.input_ids[start:stop].to(device).unsqueeze(0),
                    position_ids=torch.arange(start, stop, device=device).unsqueeze(0),
                    past_key_values=row.prefill, use_cache=True, logits_to_keep=1, **kwargs)
        row.prefilled = stop
        if stop == total:
            row.logits = out.logits[0, -1].view(self.geometry.num_codebooks, self.geometry.codebook_size)
        return stop - start

    def _join(self, row: _Row) -> None:
        slot = self._slots.index(None)
        row.slot = slot
        with self._cond:
            self._slots[slot] = row
        self._stage("join", row)
        self.cache.insert(slot, row.prefill, row.length)
        self.sampler.admit(slot, row.params)
        self.logits[slot].copy_(row.logits)
        row.prefill, row.logits = None, None

    def _leave(self, row: _Row, outcome, scrub: bool = False) -> None:
        """Take the row out of its slot (if it has one) and tell its reader: _END, or the error."""
        slot = row.slot
        if slot is not None:
            with self._cond:
                if self._slots[slot] is row:
                    self._slots[slot] = None
                    self.cache.release(slot, scrub=scrub)
            row.slot = None
        row.prefill = None
        row.out.put(outcome)

    # ---- one decode step -------------------------------------------------------------------------------
    def _step_rows(self, rows: list[_Row]) -> None:
        for row in list(rows):
            try:
                self._stage("noise", row)
                self.sampler.draw_noise(row.slot, row.generator, row.steps)
            except Exception as exc:  # noqa: BLE001
                log.exception("row failed while drawing its noise on %s", self.name)
                self._leave(row, exc)
                rows.remove(row)
        if not rows:
            return
        rows, selection = self._select(rows)
        if not rows:
            return
        index = self._index(rows)
        self.sampler.commit(index, selection)
        self.codes[index] = selection.codes
        report = self.transfer.start(selection.report)
        try:
            window = self.cache.window(max(r.length for r in rows) + 1)
            # The compiled graph always runs every slot; eager runs up to the highest occupied one.
            used = self.max_batch_size if self.compiled else max(r.slot for r in rows) + 1
            self.logits[:used].copy_(self._step(self.codes, window, used).view(used, *self.logits.shape[1:]))
        except Exception as exc:  # noqa: BLE001 - the batched forward belongs to no single row
            log.exception("decode step failed on %s: failing its %d row(s)", self.name, len(rows))
            for row in rows:
                self._leave(row, exc, scrub=True)
            self.cache.reset()
            return
        self.counters.steps += 1
        self.counters.max_rows = max(self.counters.max_rows, len(rows))
        if self.stage_hook is not None:
            for row in rows:
                self.stage_hook("logits", row)  # may only change runner.logits[row.slot]
        self._deliver(rows, report())

    def _select(self, rows: list[_Row]) -> tuple[list[_Row], Selection | None]:
        """Every row's codes at once; if that raises, row by row, so the failure is pinned on its row."""
        try:
            return rows, self._select_for(rows)
        except Exception:  # noqa: BLE001
            log.exception("batched sampling failed on %s: retrying row by row", self.name)
        kept, parts = [], []
        for row in rows:
            try:
                parts.append(self._select_for([row]))
                kept.append(row)
            except Exception as exc:  # noqa: BLE001
                log.exception("row failed while sampling on %s", self.name)
                self._leave(row, exc)
        if not kept:
            return [], None
        return kept, Selection(*(torch.cat([getattr(p, f) for p in parts]) for f in Selection.__dataclass_fields__))

    def _select_for(self, rows: list[_Row]) -> Selection:
        for row in rows:
            self._stage("sample", row)
        index = self._index(rows)
        sampled = [r.params for r in rows if r.params.temperature >= MIN_TEMPERATURE]
        span = min(MAX_RAS_WINDOW, max(r.params.ras_win_len or 0 for r in rows))
        return self.sampler.select(
            index, self.logits[index], span, sampling=bool(sampled),
            use_top_k=any(p.top_k and p.top_k < self.geometry.codebook_size for p in sampled),
            use_top_p=any(p.top_p is not None and p.top_p < 1.0 for p in sampled))

    def _index(self, rows: list[_Row]) -> torch.Tensor:
        """The rows' slots as a device index; uploaded again only when the batch's membership changed."""
        slots = [r.slot for r in rows]
        if self._rows_index is None or self._rows_index[0] != slots:
            self._rows_index = (slots, torch.tensor(slots, device=self.device))
        return self._rows_index[1]

    def _deliver(self, rows: list[_Row], report: torch.Tensor) -> None:
        K = self.geometry.num_codebooks
        for row, line in zip(rows, report):
            flags = line[K:].tolist()
            frame = line[:K].clone() if flags[REPORT_EMIT] else None
            if flags[REPORT_BAD]:
                log.error("row on %s produced non-finite scores at step %d", self.name, row.steps)
                self._leave(row, GenerationFailed("generation failed: the model produced invalid scores"),
                            scrub=True)
                continue
            row.out.put(Step(row.steps, frame))
            row.steps += 1
            if flags[REPORT_FINISHED]:
                self._leave(row, _END)

    # ---- the compiled step -----------------------------------------------------------------------------
    def _stage(self, stage: str, row: _Row) -> None:
        if self.stage_hook is not None:
            self.stage_hook(stage, row)

    def _make_step(self, compile: bool) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
        """step(codes, window, slots) -> logits of the first `slots` slots. Compiled, it is one graph over every
        slot (slots is then always max_batch_size)."""
        model, cache = self.model, self.cache
        if not compile:
            return partial(decode_step, model, cache)

        def whole(codes, window):
            return decode_step(model, cache, codes, window)

        mode = "reduce-overhead" if self.device.type == "cuda" else None
        compiled = torch.compile(whole, mode=mode, fullgraph=True)
        return lambda codes, window, slots: compiled(codes, window)

    def _warm_up(self) -> None:
        """Run (and, with compile, compile and capture) the step for every window size before the first request,
        with every slot empty, and the prefill path once: no request pays for a first call."""
        from transformers import DynamicCache

        model = self.model
        with torch.inference_mode():
            ids = torch.full((1, 4), model.config.bos_token_id or 0, dtype=torch.long, device=self.device)
            model(input_ids=ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
            for size in self.cache.buckets:
                window = self.cache.columns[:size]
                if self.compiled:
                    torch._dynamo.mark_dynamic(window, 0)
                for _ in range(3 if self.compiled else 1):
                    self._step(self.codes, window, self.max_batch_size)
            self.cache.reset()
