"""Server-Sent Events for /generate-stream.

Generation runs in a helper thread that feeds a bounded queue; the response generator forwards audio as it
arrives and sends a `: ping` comment whenever nothing came for `ping_interval` seconds (waiting for an instance,
prefill), so proxies keep the connection open. When the client goes away, the WSGI server closes the response
generator (GeneratorExit at its next yield): we set the cancel event and the engine stops within one step,
giving its instance back.
"""

from __future__ import annotations

import json
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing

from flask import Response, stream_with_context

from model_pool.errors import Cancelled, HiggsError
from model_pool.request import SAMPLE_RATE
from model_pool.service import GenerationStats

from .audio_format import pcm16_base64
from .errors import public_message

log = logging.getLogger("higgs.stream")

_END = object()
COMPLETE = object()  # watched_stream's last item when the generation finished


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class Failure:
    def __init__(self, error: BaseException):
        self.error = error


def client_disconnect_probe(environ: dict) -> Callable[[], bool] | None:
    """A cheap check that the client closed its connection, from gunicorn's socket (None elsewhere).

    Without it a disconnect is noticed only at the next write, up to a ping interval later; with it, within
    a tick, so a dropped client stops waiting in the queue (or generating) at once."""
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


def pump(produce: Callable[[threading.Event], Iterator], cancel: threading.Event, ping_interval: float,
         client_gone: Callable[[], bool] | None = None, tick: float = 0.25) -> Iterator:
    """Run produce(cancel) in a thread; yield its items, None when a ping is due, and a Failure if it raised."""
    items: queue.Queue = queue.Queue(maxsize=8)

    def put(item) -> bool:
        while not cancel.is_set():
            try:
                items.put(item, timeout=tick)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in produce(cancel):
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported to the client as an error event
            put(Failure(exc))
        finally:
            put(_END)

    worker = threading.Thread(target=work, name="sse-generation", daemon=True)
    worker.start()
    last_sent = time.monotonic()
    try:
        while True:
            try:
                item = items.get(timeout=min(tick, ping_interval))
            except queue.Empty:
                if client_gone is not None and client_gone():
                    raise Cancelled("client went away") from None
                if time.monotonic() - last_sent >= ping_interval:
                    last_sent = time.monotonic()
                    yield None
                continue
            if item is _END:
                return
            last_sent = time.monotonic()
            yield item
    finally:
        cancel.set()  # a no-op after a normal end; stops the engine when the client went away


def watched_stream(service, job, ping_interval: float, stats: GenerationStats,
                   client_gone: Callable[[], bool] | None = None, on_finish: Callable | None = None,
                   label: str = "stream") -> Iterator:
    """The pieces of one generation as a response sends them: AudioPiece items, None when a keep-alive is due,
    and finally COMPLETE, or a Failure (already logged). Logs the outcome and calls on_finish(outcome, stats,
    elapsed) however it ends: done, failed, or closed early because the client went away."""
    cancel = threading.Event()
    started = time.perf_counter()
    outcome = "cancelled"
    try:
        for item in pump(lambda c: service.stream(job, c, stats), cancel, ping_interval, client_gone):
            if isinstance(item, Failure):
                outcome = "error"
                if isinstance(item.error, HiggsError):
                    log.info("%s %s: %s", label, job.request_id, item.error.message)
                else:
                    log.error("%s %s failed", label, job.request_id, exc_info=item.error)
                yield item
                return
            yield item
        outcome = "ok"
        yield COMPLETE
    except Cancelled:
        return  # nobody is listening any more; the finally below logs it
    finally:
        cancel.set()  # the client went away (GeneratorExit) or we are done: stop the engine either way
        elapsed = time.perf_counter() - started
        log.info("%s %s %s: %.2fs audio in %.2fs, first audio %s", label, job.request_id, outcome,
                 stats.samples / SAMPLE_RATE, elapsed,
                 f"{stats.first_audio_s:.3f}s" if stats.first_audio_s is not None else "-")
        if on_finish is not None:
            on_finish(outcome, stats, elapsed)


def event_stream(service, job, text: str, ping_interval: float, client_gone: Callable[[], bool] | None = None,
                 on_finish: Callable | None = None) -> Iterator[str]:
    """/generate-stream's events: start, audio..., then done or error."""
    stats = GenerationStats()
    yield sse("start", {"type": "start", "sampling_rate": SAMPLE_RATE, "format": "pcm_s16le", "channels": 1,
                        "request_id": job.request_id})
    index = 0
    with closing(watched_stream(service, job, ping_interval, stats, client_gone, on_finish)) as items:
        for item in items:
            if item is None:
                yield ": ping\n\n"
            elif item is COMPLETE:
                yield sse("done", {"type": "done", "success": True, "duration": stats.samples / SAMPLE_RATE,
                                   "sampling_rate": SAMPLE_RATE, "generated_text": text})
            elif isinstance(item, Failure):
                yield sse("error", {"type": "error", "message": public_message(item.error),
                                    "request_id": job.request_id})
                return
            else:
                yield sse("audio", {
                    "type": "audio",
                    "index": index,
                    "audio_base64": pcm16_base64(item.samples),
                    "samples": int(item.samples.shape[0]),
                    "progress": {"generated_tokens": item.generated_tokens, "max_new_tokens": item.max_new_tokens,
                                 "chunk": item.chunk, "total_chunks": item.total_chunks},
                })
                index += 1


def stream_response(body: Iterator, mimetype: str, request_id: str) -> Response:
    """A streamed answer that proxies pass on as it is made (no caching, nginx buffering off)."""
    return Response(stream_with_context(body), mimetype=mimetype,
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-ID": request_id})
