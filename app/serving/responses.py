"""How a generation handle's events reach a client: watched for clients that leave, and answered as a stream that
proxies pass on as it is made.

Between events the handle checks gunicorn's socket for EOF (client_disconnect_probe), so a client that goes away
stops its generation within a tick, whether it asked for a stream or a whole file. A client that stops reading
without leaving is cut off by the socket timeout (app.factory sets it: --client-timeout), which closes the response
body; the handle records that as "stalled". A body closed before it was iterated still ends its handle.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Callable, Iterator

from flask import Response, request, stream_with_context

from model_pool.lifecycle import Generation, Watch

from ..runtime import runtime


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


def client_watch() -> Watch:
    """How this request's generation is watched: keep-alives, the client's socket, the stalled-reader timeout."""
    settings = runtime().settings
    return Watch(settings.ping_interval, client_disconnect_probe(request.environ), settings.client_timeout)


def seed_header(seed: int | None) -> dict[str, str]:
    """X-Seed: the seed a generation used, so its audio can be reproduced (none for a greedy one)."""
    return {"X-Seed": str(seed)} if seed is not None else {}


def finish_headers(stats) -> dict[str, str]:
    """X-Finish-Reason (stop, length or runaway) and, for a runaway, X-Runaway-Reason: how a generation ended, for an
    answer whose headers are sent after its end (a streamed body's are sent before it: its end is in the log)."""
    headers = {"X-Finish-Reason": stats.finish_reason} if stats.finish_reason else {}
    if stats.runaway_reason:
        headers["X-Runaway-Reason"] = stats.runaway_reason
    return headers


def stream_response(body: Iterator, mimetype: str, handle: Generation, seed: int | None = None) -> Response:
    """A streamed answer (no caching, nginx buffering off) whose closing ends the handle if the body did not. `seed`
    (the one the generation uses) goes out as X-Seed, so any answer can be reproduced."""
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-ID": handle.request_id,
               **seed_header(seed)}
    response = Response(stream_with_context(body), mimetype=mimetype, headers=headers)
    response.call_on_close(handle.close)
    return response
