"""One generation's life as one object, from admission to its end, the way vLLM's engine client hands out a request
handle (`generate(request_id)` / `abort(request_id)`).

`TTSService.start(job)` admits the request (a place in the pool, or PoolBusy / NotReady before any byte is sent) and
returns a `Generation`. The handle owns everything that must end exactly once: the pool reservation, the cancel
token the engine checks between decode steps, the stats, and the observation (`on_finish(outcome, stats,
elapsed)`, the metrics). Every consumer (a whole-file answer, an SSE stream, an audio body, a realtime session, a
benchmark) iterates `handle.events(watch)`:

  Event("audio", piece)...   as audio is made, from a helper thread that feeds a bounded queue
  Event("ping")              whenever nothing came for `watch.ping_interval` seconds (queueing, prefill)
  Event("done") | Event("error", error)

and the handle ends, once, however the request ends: "ok", "error", "cancelled" (the client went away, or
`abort()`), "stalled" (the consumer stopped reading for `watch.stall_timeout` and its body was closed), or
"shutdown" (`TTSService.shutdown()`, the server stopping). A second release is a bug: it raises LifecycleError.
`close()` ends a handle that has not ended yet (a body closed before it was iterated), so nothing leaks.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import Cancelled, HiggsError
from .request import SAMPLE_RATE

log = logging.getLogger("higgs.stream")


class LifecycleError(RuntimeError):
    """A request's resources were released twice: a bug in the server, never a client's doing."""


@dataclass
class AudioPiece:
    samples: np.ndarray  # float32 mono, 24 kHz
    generated_tokens: int  # decode steps so far in this chunk
    max_new_tokens: int
    chunk: int  # 0-based text chunk
    total_chunks: int


@dataclass
class GenerationStats:
    queue_wait_s: float = 0.0
    first_audio_s: float | None = None
    frames: int = 0
    samples: int = 0
    prompt_tokens: int = 0  # text and audio tokens of every chunk's prompt (usage reports)
    finish_reason: str | None = None  # stop | length | runaway, once a chunk ended (model_pool/guard.py)
    runaway_reason: str | None = None  # repetition | silence | text_budget, when the runaway guard ended it


@dataclass
class Event:
    kind: str  # "audio" | "ping" | "done" | "error"
    piece: AudioPiece | None = None
    error: BaseException | None = None


@dataclass
class Watch:
    """How a consumer is watched: keep-alives, the client's presence, how long a stalled reader may hold a slot."""

    ping_interval: float = 5.0
    client_gone: Callable[[], bool] | None = None  # a cheap probe, checked every tick
    stall_timeout: float | None = None  # the body was closed after the consumer sat this long on one event
    tick: float = 0.25


_END = Event("end")
STOP_WAIT_S = 5.0  # how long an ending handle waits for its generation to stop (a step, a queue tick: far less)
Producer = Callable[[threading.Event, GenerationStats], Iterator[AudioPiece]]
Observer = Callable[[str, GenerationStats, float], None]


class Generation:
    def __init__(self, request_id: str, produce: Producer, reservation, on_finish: Observer | None = None,
                 label: str = "generate", on_release: Callable[[Generation], None] | None = None,
                 stats: GenerationStats | None = None):
        self.request_id = request_id
        self.label = label
        self.stats = stats if stats is not None else GenerationStats()
        self.cancel = threading.Event()  # the engine checks it between decode steps; the queue wait checks it too
        self.outcome: str | None = None  # set once, when the handle ends
        self._produce = produce
        self._reservation = reservation
        self._on_finish = on_finish
        self._on_release = on_release
        self._abort: tuple[str, BaseException | None] | None = None
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._stall_timeout: float | None = None
        self._pending: str | None = None  # the outcome the events have reached so far
        self._events: Iterator[Event] | None = None
        self._worker: threading.Thread | None = None

    # ---- control ---------------------------------------------------------------------------------------
    def abort(self, outcome: str = "cancelled", error: BaseException | None = None) -> None:
        """Stop the generation within a decode step. The consumer gets `error` as its last event when one is given
        (a server stopping says so), else nothing more; the handle ends with `outcome`."""
        with self._lock:
            if self._abort is None:
                self._abort = (outcome, error)
        self.cancel.set()

    def close(self) -> None:
        """End the handle now if it has not ended: a body closed before it was iterated, or a consumer that stopped
        early. The outcome is what the events had reached (an error they delivered, say), else "cancelled"."""
        self.cancel.set()
        events, self._events = self._events, None
        if events is not None:
            events.close()  # its finally ends the handle with the outcome it reached ("stalled", say)
        if self.outcome is None:
            self._end(self._pending or (self._abort[0] if self._abort else "cancelled"))

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the events ------------------------------------------------------------------------------------
    def events(self, watch: Watch | None = None) -> Iterator[Event]:
        """The generation's events, ending with "done" or "error" (logged here); the handle ends when they do, when
        the iterator is closed, or when the handle is (the client stopped reading, or went away). Once per handle."""
        if self._events is not None or self.outcome is not None:
            raise LifecycleError(f"{self.label} {self.request_id}: its events were asked for twice")
        self._events = self._run(watch or Watch())
        return self._events

    def _run(self, watch: Watch) -> Iterator[Event]:
        self._stall_timeout = watch.stall_timeout
        suspended = None
        try:
            for event in self._pump(watch):
                if event.kind == "error":
                    self._pending = "error" if self._abort is None else self._abort[0]
                    self._log_error(event.error)
                suspended = time.monotonic()
                yield event
                suspended = None
                if event.kind == "error":
                    return
            if self._abort is None:
                self._pending = "ok"
                yield Event("done")
        except GeneratorExit:
            if suspended is not None and watch.stall_timeout and time.monotonic() - suspended >= watch.stall_timeout:
                self._pending = "stalled"
            raise
        finally:
            self._events = None
            self.close()  # whatever happened, the engine stops and the handle ends (once)

    def _pump(self, watch: Watch) -> Iterator[Event]:
        """Run the producer in a thread; yield its audio, a ping when one is due, its error; stop on abort."""
        items: queue.Queue = queue.Queue(maxsize=8)
        cancel = self.cancel

        def put(item) -> bool:
            while not cancel.is_set():
                try:
                    items.put(item, timeout=watch.tick)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for piece in self._produce(cancel, self.stats):
                    if not put(Event("audio", piece)):
                        return
            except BaseException as exc:  # noqa: BLE001 - reported to the consumer as an error event
                put(Event("error", error=exc))
            finally:
                put(_END)

        self._worker = threading.Thread(target=work, name=f"generation-{self.request_id}", daemon=True)
        self._worker.start()
        last_sent = last_check = time.monotonic()
        while True:
            try:
                item = items.get(timeout=min(watch.tick, watch.ping_interval))
            except queue.Empty:
                item = None
            if self._abort is not None:
                error = self._abort[1]
                if error is not None:
                    yield Event("error", error=error)
                return
            now = time.monotonic()
            if watch.client_gone is not None and now - last_check >= watch.tick:
                last_check = now  # checked every tick, busy or not: /generate writes nothing until the end
                if watch.client_gone():
                    self.abort("cancelled")
                    return
            if item is None:
                if now - last_sent >= watch.ping_interval:
                    last_sent = now
                    yield Event("ping")
                continue
            if item is _END:
                return
            last_sent = now
            yield item
            if item.kind == "error":
                return

    # ---- the end -----------------------------------------------------------------------------------------
    def _end(self, outcome: str) -> None:
        """Release the reservation, log and observe the outcome: exactly once per handle."""
        with self._lock:
            if self.outcome is not None:
                raise LifecycleError(f"{self.label} {self.request_id} ended twice ({self.outcome}, then {outcome})")
            self.outcome = outcome
        self.cancel.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            # The engine stops within a decode step and the producer within a queue tick: wait for it, so the
            # batch slot is back in the pool when the handle has ended.
            worker.join(STOP_WAIT_S)
            if worker.is_alive():
                log.warning("%s %s: the generation did not stop within %gs of its end", self.label, self.request_id,
                            STOP_WAIT_S)
        try:
            if self._reservation.held:  # else the collector reclaimed it first: a handle dropped unended (logged)
                self._reservation.release()
        finally:
            if self._on_release is not None:
                self._on_release(self)
            elapsed = time.perf_counter() - self._started
            self._log_end(outcome, elapsed)
            if self._on_finish is not None:
                self._on_finish(outcome, self.stats, elapsed)

    def _log_error(self, error: BaseException) -> None:
        if isinstance(error, HiggsError) and not isinstance(error, Cancelled):
            log.info("%s %s: %s", self.label, self.request_id, error.message)
        elif not isinstance(error, Cancelled):
            log.error("%s %s failed", self.label, self.request_id, exc_info=error)

    def _log_end(self, outcome: str, elapsed: float) -> None:
        stats = self.stats
        if outcome == "stalled":
            log.warning("%s %s cancelled: the client stopped reading for %gs (generation stopped, slot freed)",
                        self.label, self.request_id, self._stall_timeout)
        first = f"{stats.first_audio_s:.3f}s" if stats.first_audio_s is not None else "-"
        finish = stats.finish_reason or "-"
        if stats.runaway_reason:
            finish += f" ({stats.runaway_reason})"
        log.info("%s %s %s: %.2fs audio in %.2fs, first audio %s, finish %s", self.label, self.request_id, outcome,
                 stats.samples / SAMPLE_RATE, elapsed, first, finish)


def collect(events: Iterator[Event]) -> np.ndarray:
    """Every audio piece of a generation, joined; its error raised; Cancelled if it ended without either. The
    events are closed on the way out, so their handle has ended when this returns or raises."""
    pieces = []
    with contextlib.closing(events):
        for event in events:
            if event.kind == "audio":
                pieces.append(event.piece.samples)
            elif event.kind == "error":
                raise event.error
            elif event.kind == "done":
                return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    raise Cancelled("generation cancelled")
