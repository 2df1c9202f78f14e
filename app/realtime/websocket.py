"""The WebSocket itself: simple-websocket (wsproto) on the WSGI server's socket, which works in gunicorn's gthread
workers (one thread holds the connection; simple-websocket reads it in a second).

simple-websocket writes with socket.send, which may write part of a frame on a socket with a timeout (ours have
one: --client-timeout), and its reader thread answers pings on the same socket: the socket is wrapped so every write
is whole and writes never interleave.

Closing lingers: a client still sending (a message over the size limit, refused after its first 4 MB) would get a
TCP reset from a socket closed with unread data, and a reset discards the close frame already sent. So the socket is
shut for writing (the client reads our close frame, then the end), what still arrives is read and dropped until the
client closes its side (at most LINGER seconds), and only then is it closed; the view waits for that before it
returns the connection to the WSGI server.
"""

from __future__ import annotations

import socket
import threading
import time

from flask import Response
from simple_websocket import ConnectionClosed, Server

__all__ = ["ConnectionClosed", "accept", "finished_response"]

LINGER = 5.0  # seconds a closing socket waits for the client to stop sending


class _WholeWrites:
    """A socket whose send() writes everything, one writer at a time; everything else is the socket's."""

    def __init__(self, sock):
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def close(self) -> None:
        """Shut our side, drop what the client still sends until it closes its side (or LINGER), then close."""
        try:
            with self._lock:
                self._sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                if not self._sock.recv(65536):
                    break
        except OSError:
            pass
        finally:
            self._sock.close()

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
    WSGI server must send nothing more (gunicorn: end the request as handled). The reader thread closes the socket
    (lingering, above) once the closing handshake is over: the view waits for it first."""
    ws.thread.join(LINGER + 5)

    class Finished(Response):
        def __call__(self, environ, start_response):
            if ws.mode == "gunicorn":
                raise StopIteration()
            return super().__call__(environ, start_response)

    return Finished()
