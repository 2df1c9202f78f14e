"""Which rows run this iteration: plain Python, no torch, as vLLM v1's scheduler.

A row waits until a slot is free, takes one, is prefilled in pieces within the iteration's token budget (written
straight into its slot), joins the decode batch in the iteration its last piece is prefilled, and leaves when it
finishes, fails, is cancelled or its reader goes away. `schedule()` returns a `Schedule` (a plain data object) that
the model runner executes; the output processor reports back which rows ended (`leave`). The scheduler never reads
a tensor: a row's prompt is an opaque object with its token count beside it.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field

# With no row decoding, one prefill forward may take this many times the per-iteration token budget: the prompts
# that arrive together are prefilled together (a bound on the forward's memory, not on anyone's wait).
IDLE_BUDGET_FACTOR = 8


@dataclass(eq=False)
class Row:
    prompt: object  # EncodedPrompt: only the model runner reads it
    tokens: int  # prompt tokens
    params: object  # SamplingParams
    cancel: threading.Event | None
    random: object  # sampling.RowRandom: the row's generators and its RAS context
    max_steps: int  # its max_new_tokens: the device finishes it at that step whatever it samples
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: threading.Event = field(default_factory=threading.Event)
    slot: int | None = None
    prefilled: int = 0  # prompt tokens written into the slot so far
    decoding: bool = False  # joined the decode batch
    launched: int = 0  # decode steps launched on the device
    steps: int = 0  # decode steps delivered to the reader
    ended: bool = False

    @property
    def length(self) -> int:
        """Tokens in the row's slot: its prompt, then one per launched step."""
        return self.tokens + self.launched

    def stopped(self) -> bool:
        return self.abandoned.is_set() or (self.cancel is not None and self.cancel.is_set())


@dataclass
class Piece:
    row: Row
    start: int  # prompt tokens [start, stop) are prefilled this iteration
    stop: int

    @property
    def completes(self) -> bool:
        return self.stop == self.row.tokens


@dataclass
class Schedule:
    pieces: list[Piece]  # prompt pieces to prefill, in arrival order
    decode: list[Row]  # rows in this iteration's decode step (rows whose prompt completes now included)
    # A row whose last step was launched is not run again while its report is on the way (its slot has no column
    # for another step when its prompt and max_new_tokens fill the context).

    @property
    def joins(self) -> list[Row]:
        return [p.row for p in self.pieces if p.completes]


class Scheduler:
    def __init__(self, slots: int, token_budget: int | None):
        self.slots: list[Row | None] = [None] * slots
        self.waiting: deque[Row] = deque()
        self.token_budget = token_budget  # prompt tokens per iteration while rows decode (None: unbounded)
        self.lock = threading.Condition()

    # ---- request side (any thread) -----------------------------------------------------------------------
    def add(self, row: Row) -> None:
        with self.lock:
            self.waiting.append(row)
            self.lock.notify()

    def wait_for_work(self) -> None:
        with self.lock:
            while not self.waiting and not any(self.slots):
                self.lock.wait()

    @property
    def active(self) -> int:
        with self.lock:
            return sum(r is not None for r in self.slots) + len(self.waiting)

    # ---- the loop's side ---------------------------------------------------------------------------------
    def stopped(self) -> list[Row]:
        """Rows cancelled or abandoned by their reader, running or waiting: the loop ends them first."""
        with self.lock:
            return [r for r in (*self.slots, *self.waiting) if r is not None and r.stopped()]

    def schedule(self) -> Schedule:
        with self.lock:
            decoding = [r for r in self.slots if r is not None and r.decoding and r.launched < r.max_steps]
            pieces = self._pieces(any(r is not None and r.decoding for r in self.slots))
        return Schedule(pieces, decoding + [p.row for p in pieces if p.completes])

    def _pieces(self, busy: bool) -> list[Piece]:
        """Prompt pieces within the budget: rows already in a slot first (oldest first), then waiting rows while
        slots are free. With nothing decoding nobody waits for the prefill: the budget is IDLE_BUDGET_FACTOR times
        larger, and the first prompt goes whole whatever its length."""
        budget = self.token_budget if self.token_budget is not None else float("inf")
        budget *= 1 if busy else IDLE_BUDGET_FACTOR
        pieces: list[Piece] = []
        prefilling = sorted((r for r in self.slots if r is not None and not r.decoding), key=lambda r: r.slot)
        while self.waiting and None in self.slots:
            row = self.waiting.popleft()
            row.slot = self.slots.index(None)
            self.slots[row.slot] = row
            prefilling.append(row)
        for row in prefilling:
            if budget <= 0:
                break
            take = row.tokens - row.prefilled if (not busy and not pieces) else min(row.tokens - row.prefilled,
                                                                                   int(budget))
            pieces.append(Piece(row, row.prefilled, row.prefilled + take))
            budget -= take
        return pieces

    def leave(self, row: Row) -> int | None:
        """Take a row out (its slot, or the queue); the slot it held, if any."""
        with self.lock:
            return self._drop(row)

    def _drop(self, row: Row) -> int | None:
        row.ended = True
        slot = row.slot
        if slot is not None and self.slots[slot] is row:
            self.slots[slot] = None
        elif row in self.waiting:
            self.waiting.remove(row)
        row.slot = None
        return slot

    def rows(self) -> list[Row]:
        """Every row, running or waiting."""
        with self.lock:
            return [r for r in self.slots if r is not None] + list(self.waiting)
