"""The WebSocket itself: simple-websocket (wsproto) on the WSGI server's socket, which works in gunicorn's gthread
workers (one thread holds the connection; simple-websocket reads it in a second).

simple-websocket writes with socket.send, which may write part of a frame on a socket with a timeout (ours have
one: --client-timeout), and its reader thread answers pings on the same socket: the socket is wrapped so every write
is whole and writes never interleave.
"""

from __future__ import annotations

import threading

from flask import Response
from simple_websocket import ConnectionClosed, Server

__all__ = ["ConnectionClosed", "accept", "finished_response"]


class _WholeWrites:
    """A socket whose send() writes everything, one writer at a time; everything else is the socket's."""

    def __init__(self, sock):
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def accept(environ: dict, subprotocol: str | None, max_message_size: int) -> Server:
    """Complete the handshake (choosing `subprotocol` when the client offered it) and return the connection."""
    environ = dict(environ)
    for key in ("gunicorn.socket", "werkzeug.socket"):
        if key in environ:
            environ[key] = _WholeWrites(environ[key])
    return Server(environ, subprotocols=[subprotocol] if subprotocol else None, max_message_size=max_message_size)


def finished_response(ws: Server) -> Response:
    """What the view returns once the session is over: the connection was answered on the socket already, so the
    WSGI server must send nothing more (gunicorn: end the request as handled)."""

    class Finished(Response):
        def __call__(self, environ, start_response):
            if ws.mode == "gunicorn":
                raise StopIteration()
            return super().__call__(environ, start_response)

    return Finished()
