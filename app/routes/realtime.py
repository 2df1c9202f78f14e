"""WS /v1/audio/speech/stream: realtime speech sessions (app/realtime). Everything that can refuse a session is
checked before the handshake completes, as a plain HTTP answer: the API key (app/auth.py, which also reads a
browser's key from a Sec-WebSocket-Protocol entry), the page's Origin against --cors-origins, and the per-worker
session limit (503 + Retry-After)."""

from __future__ import annotations

import logging

from flask import Blueprint, g, request

from .. import metrics
from ..auth import WS_SUBPROTOCOL
from ..errors import ForbiddenOrigin, SessionsFull
from ..realtime.session import Limits, RealtimeSession
from ..realtime.websocket import accept, finished_response
from ..runtime import runtime

log = logging.getLogger("higgs.realtime")
blp = Blueprint("realtime", __name__, url_prefix="/v1")
blp.error_shape = "openai"


def _origin_allowed(origin: str | None, allowed: str) -> bool:
    if origin is None or allowed.strip() == "*":
        return True  # programs send no Origin; "*" allows every page
    return origin in [o.strip() for o in allowed.split(",")]


@blp.route("/audio/speech/stream", websocket=True)
def speech_stream():
    rt = runtime()
    settings = rt.settings
    if not _origin_allowed(request.headers.get("Origin"), settings.cors_origins):
        raise ForbiddenOrigin("this page's origin may not open realtime sessions (see --cors-origins)")
    if not rt.sessions.acquire(blocking=False):
        raise SessionsFull(f"server busy: all {settings.max_sessions} realtime sessions of this worker are open")
    try:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        # The WebSocket refuses (1009) what is over the larger session.config limit; the session, the rest.
        ws = accept(request.environ, WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None,
                    max(settings.max_config_message_kb, settings.max_message_kb) * 1024)
        metrics.REALTIME_SESSIONS.inc()
        log.info("realtime %s: session opened", g.request_id)
        limits = Limits(settings.session_idle_timeout, settings.max_text_chars, settings.max_request_steps,
                        settings.queue_timeout, settings.ping_interval, settings.max_message_kb * 1024)
        try:
            RealtimeSession(ws, rt.service, g.request_id, limits, settings.max_new_tokens).run()
        finally:
            metrics.REALTIME_SESSIONS.dec()
            log.info("realtime %s: session closed", g.request_id)
    finally:
        rt.sessions.release()
    return finished_response(ws)
