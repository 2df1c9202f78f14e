"""The batch loop of one engine instance: it drives the scheduler, the model runner and the output processor.

A decode step reads every weight once whatever the batch size, so decoding many requests together costs little more
than one. One thread per instance runs the loop; each iteration:
  1. ends the rows whose reader went away or cancelled (their slots are free for this iteration's joins);
  2. asks the scheduler for this iteration's prompt pieces (within the token budget) and decode rows;
  3. prefills the pieces in one forward, straight into their slots; the prompts it completes join the batch;
  4. draws the noise blocks that ran out (one op per row per block) and launches the decode step, which selects
     every slot's codes on the device and feeds them back (one compiled graph) and starts its report's copy;
  5. hands out the previous step's report while the device runs this one (the host's per-row Python overlaps the
     device's work), then this step's report becomes the pending one.
A failure while a row is prefilled, joins or has its noise drawn fails that row only (a batched prefill that raises
is run again piece by piece, so the failure is pinned on its row); a row whose scores are non-finite fails alone.
Only a failure of the batched decode step itself, which no single row owns, fails every running row.

Two seams for tests and diagnostics, and nothing else reads the loop's internals: `counters` (steps, the most rows
seen in one step, host transfers) and `stage_hook(stage, row)`, called before each row's "prefill" piece, its
"join", and before each step's "noise" and "sample" of each row, and after each step's launch ("logits", with the
row's logits for its next step in `runner.logits[row.slot]`). A hook that raises there is a fault of that stage,
for that row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..defaults import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_CONTEXT_TOKENS, DEFAULT_PREFILL_CHUNK
from ..request import SamplingParams
from .geometry import CodeGeometry
from .model_runner import ModelRunner, Report
from .output import END, OutputProcessor, Step
from .sampling import row_generator
from .scheduler import Piece, Row, Scheduler

log = logging.getLogger(__name__)

__all__ = ["BatchRunner", "Counters", "Step"]


@dataclass
class Counters:
    """What the loop has done, for tests and diagnostics (nothing in the loop reads them)."""

    steps: int = 0  # batched decode steps
    max_rows: int = 0  # the most rows that shared one step
    transfers: int = 0  # device-to-host copies of a step's report

    def reset(self) -> None:
        self.steps = self.max_rows = self.transfers = 0


class BatchRunner:
    def __init__(self, model, geometry: CodeGeometry, device: torch.device, name: str = "engine",
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
                 compile: bool = False, prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK):
        self.geometry, self.device, self.name = geometry, device, name
        self.max_batch_size = max(1, max_batch_size)
        self.context_tokens = context_tokens
        self.compiled = compile
        self.counters = Counters()
        self.stage_hook: Callable[[str, Row], None] | None = None
        self.scheduler = Scheduler(self.max_batch_size, prefill_chunk or None)
        self.model_runner = ModelRunner(model, geometry, device, self.max_batch_size, context_tokens, compile,
                                        self.counters)
        self.output = OutputProcessor(self.scheduler, self.model_runner, geometry.num_codebooks, name)
        self._pending: tuple[list[Row], Report] | None = None  # the launched step whose report is not handed out
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self.model_runner.warm_up()

    # The device buffers, for tests and the probe (read-only seams).
    @property
    def cache(self):
        return self.model_runner.cache

    @property
    def logits(self) -> torch.Tensor:
        return self.model_runner.logits

    @property
    def codes(self) -> torch.Tensor:
        return self.model_runner.codes

    @property
    def transfer(self):
        return self.model_runner.transfer

    # ---- request side ----------------------------------------------------------------------------------
    def submit(self, prompt, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[Step]:
        """The prompt must fit the context with its max_new_tokens (the service measures it before any work)."""
        row = Row(prompt, int(prompt.input_ids.shape[0]), params, cancel, row_generator(params, prompt, self.device),
                  params.max_new_tokens)
        self.scheduler.add(row)
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"batch-{self.name}", daemon=True)
                self._thread.start()
        return self._results(row)

    @staticmethod
    def _results(row: Row) -> Iterator[Step]:
        try:
            while True:
                item = row.out.get()
                if item is END:
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
        return self.scheduler.active

    # ---- the loop --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if self._pending is None:
                self.scheduler.wait_for_work()
            try:
                with torch.inference_mode():
                    self._iterate()
            except BaseException as exc:  # noqa: BLE001 - a bug in the loop: every waiting request must hear of it
                log.exception("batch loop failed on %s", self.name)
                self._pending = None
                for row in self.scheduler.rows():
                    self.output.end(row, exc, scrub=True)
                self.model_runner.reset()

    def _iterate(self) -> None:
        for row in self.scheduler.stopped():
            self.output.end(row)
        schedule = self.scheduler.schedule()
        if schedule.pieces:
            self._prefill(schedule.pieces)
        rows = self._prepare([r for r in schedule.decode if not r.ended])
        launched = self._launch(rows) if rows else None
        pending, self._pending = self._pending, launched
        if pending is not None:  # the previous step's rows get their frames while the device runs this one
            self.output.deliver(pending[0], pending[1].wait())

    # ---- joining ---------------------------------------------------------------------------------------
    def _prefill(self, pieces: list[Piece]) -> None:
        """Prefill the pieces together; if that raises, piece by piece, so the failure is pinned on its row. The
        rows whose prompt is complete join the decode batch."""
        pieces = [p for p in pieces if self._guard("prefill", p.row)]
        try:
            if pieces:
                self.model_runner.prefill([(p.row.prompt, p.row.slot, p.start, p.stop) for p in pieces])
        except Exception:  # noqa: BLE001
            log.exception("batched prefill failed on %s: retrying piece by piece", self.name)
            pieces = [p for p in pieces if self._attempt(
                "prefill", p.row, lambda p=p: self.model_runner.prefill([(p.row.prompt, p.row.slot, p.start,
                                                                          p.stop)]))]
        for piece in pieces:
            piece.row.prefilled = piece.stop
        joining = [p.row for p in pieces if p.completes and self._guard("join", p.row)]
        if joining:
            self._attempt_all("join", joining, lambda rows: self.model_runner.join(
                [r.slot for r in rows], [r.tokens for r in rows], [r.params for r in rows]))

    def _attempt_all(self, stage: str, rows: list[Row], work) -> None:
        try:
            work(rows)
        except Exception:  # noqa: BLE001
            log.exception("%s failed on %s for %d rows: retrying row by row", stage, self.name, len(rows))
            rows = [r for r in rows if self._attempt(stage, r, lambda r=r: work([r]))]
        for row in rows:
            row.decoding = True

    # ---- one decode step -------------------------------------------------------------------------------
    def _prepare(self, rows: list[Row]) -> list[Row]:
        """Per row, before the step: its noise for this step (a block every NOISE_AHEAD steps, the RAS context at
        step 0). A row that fails here leaves alone."""
        kept = []
        for row in rows:
            if not row.decoding or row.ended:
                continue
            if self._guard("noise", row) and self._attempt(
                    "noise", row, lambda r=row: self.model_runner.draw(r.slot, r.random, r.launched)) \
                    and self._guard("sample", row):
                kept.append(row)
        return kept

    def _launch(self, rows: list[Row]) -> tuple[list[Row], Report] | None:
        try:
            report = self.model_runner.step(max(r.length for r in rows) + 1, max(r.slot for r in rows),
                                            [r.params for r in rows])
        except Exception as exc:  # noqa: BLE001 - the batched step belongs to no single row
            log.exception("decode step failed on %s: failing its %d row(s)", self.name, len(rows))
            for row in rows:
                self.output.end(row, exc, scrub=True)
            self.model_runner.reset()
            return None
        for row in rows:
            row.launched += 1
        self.counters.steps += 1
        self.counters.max_rows = max(self.counters.max_rows, len(rows))
        if self.stage_hook is not None:
            for row in rows:
                self.stage_hook("logits", row)  # may only change runner.logits[row.slot]
        return rows, report

    # ---- per-row faults --------------------------------------------------------------------------------
    def _guard(self, stage: str, row: Row) -> bool:
        """The stage hook for this row; False (and the row ended) if it raised."""
        return self.stage_hook is None or self._attempt(stage, row, lambda: self.stage_hook(stage, row))

    def _attempt(self, stage: str, row: Row, work) -> bool:
        try:
            work()
            return True
        except Exception as exc:  # noqa: BLE001 - this row's fault: this row alone fails
            log.exception("row failed at %s on %s", stage, self.name)
            self.output.end(row, exc, scrub=stage in ("prefill", "join"))
            return False
