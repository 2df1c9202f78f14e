"""One generation as every endpoint consumes it: a stream of tagged events, watched for clients that leave.

Generation runs in a helper thread that feeds a bounded queue. The consumer (a response body, or the request thread
of /generate) gets Event("audio"), Event("ping") whenever nothing came for `ping_interval` seconds (waiting for a
slot, prefill), then Event("done") or Event("error"). Between events it checks gunicorn's socket for EOF, so a client
that goes away stops its generation within a tick, whether it asked for a stream or a whole file. A client that
stops reading without leaving is cut off by the socket timeout (app.factory sets it: --client-timeout), which
closes the response body; that cancels the generation the same way and is logged as such.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from flask import Response, request, stream_with_context

from model_pool.errors import Cancelled, HiggsError
from model_pool.request import SAMPLE_RATE
from model_pool.service import AudioPiece, GenerationStats

log = logging.getLogger("higgs.stream")


@dataclass
class Event:
    kind: str  # "audio" | "ping" | "done" | "error"
    piece: AudioPiece | None = None
    error: BaseException | None = None


_END = Event("end")


def client_disconnect_probe(environ: dict) -> Callable[[], bool] | None:
    """A cheap check that the client closed its connection, from gunicorn's socket (None elsewhere)."""
    sock = environ.get("gunicorn.socket")
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    return gone


@dataclass
class Watch:
    """How a generation is watched: keep-alives, the client's presence, how long a stalled reader may hold it."""

    ping_interval: float
    client_gone: Callable[[], bool] | None = None
    client_timeout: float | None = None
    tick: float = 0.25


def _pump(produce: Callable[[threading.Event], Iterator], cancel: threading.Event, watch: Watch) -> Iterator[Event]:
    """Run produce(cancel) in a thread; yield Event("audio"), Event("ping") when one is due, Event("error")."""
    items: queue.Queue = queue.Queue(maxsize=8)

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
            for piece in produce(cancel):
                if not put(Event("audio", piece)):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported to the consumer as an error event
            put(Event("error", error=exc))
        finally:
            put(_END)

    threading.Thread(target=work, name="generation", daemon=True).start()
    last_sent = last_check = time.monotonic()
    while True:
        try:
            item = items.get(timeout=min(watch.tick, watch.ping_interval))
        except queue.Empty:
            item = None
        now = time.monotonic()
        if watch.client_gone is not None and now - last_check >= watch.tick:
            last_check = now  # checked every tick, busy or not: /generate writes nothing until the end
            if watch.client_gone():
                raise Cancelled("client went away")
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


def generation_events(service, job, reservation, stats: GenerationStats, watch: Watch,
                      on_finish: Callable | None = None, label: str = "stream") -> Iterator[Event]:
    """The events of one generation, ending with "done" or "error" (already logged). Logs the outcome and calls
    on_finish(outcome, stats, elapsed) however it ends: done, failed, client gone, or client stopped reading."""
    cancel = threading.Event()
    started = time.perf_counter()
    outcome = "cancelled"
    suspended = None
    try:
        for event in _pump(lambda c: service.stream(job, c, stats, reservation), cancel, watch):
            if event.kind == "error":
                outcome = "error"
                if isinstance(event.error, HiggsError):
                    log.info("%s %s: %s", label, job.request_id, event.error.message)
                else:
                    log.error("%s %s failed", label, job.request_id, exc_info=event.error)
            suspended = time.monotonic()
            yield event
            suspended = None
            if event.kind == "error":
                return
        outcome = "ok"
        yield Event("done")
    except Cancelled:
        return  # the client went away; the finally below logs it
    except GeneratorExit:
        if suspended is not None and watch.client_timeout and time.monotonic() - suspended >= watch.client_timeout:
            outcome = "stalled"
        raise
    finally:
        cancel.set()  # the client went away, stopped reading, or we are done: stop the engine either way
        reservation.release()  # already released by the stream if it got that far; once only
        elapsed = time.perf_counter() - started
        first = f"{stats.first_audio_s:.3f}s" if stats.first_audio_s is not None else "-"
        if outcome == "stalled":
            log.warning("%s %s cancelled: the client stopped reading for %gs (generation stopped, slot freed)",
                        label, job.request_id, watch.client_timeout)
        log.info("%s %s %s: %.2fs audio in %.2fs, first audio %s", label, job.request_id, outcome,
                 stats.samples / SAMPLE_RATE, elapsed, first)
        if on_finish is not None:
            on_finish(outcome, stats, elapsed)


def watch(rt) -> Watch:
    """How this request's generation is watched, from the settings and gunicorn's socket."""
    return Watch(rt.settings.ping_interval, client_disconnect_probe(request.environ), rt.settings.client_timeout)


def collect(events: Iterator[Event]) -> np.ndarray:
    """Every audio piece of a generation, joined; its error raised; Cancelled if the client went away."""
    pieces = []
    for event in events:
        if event.kind == "audio":
            pieces.append(event.piece.samples)
        elif event.kind == "error":
            raise event.error
        elif event.kind == "done":
            return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    raise Cancelled("client went away")


def stream_response(body: Iterator, mimetype: str, request_id: str) -> Response:
    """A streamed answer that proxies pass on as it is made (no caching, nginx buffering off)."""
    return Response(stream_with_context(body), mimetype=mimetype,
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-ID": request_id})
