"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY` on every endpoint but the health checks
and the two pages (the playground, /docs with its assets).

CORS preflights (OPTIONS) carry no credentials by design, so they pass; the request that follows is checked.

Browsers cannot set headers on a WebSocket, and a key in the URL would land in logs and proxies' histories, so a
realtime session may present its key as a Sec-WebSocket-Protocol entry instead, as OpenAI's Realtime API does:
`new WebSocket(url, ["higgs-audio", "higgs-api-key." + KEY])`; the server answers with "higgs-audio" alone.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, request

from .errors import Unauthorized

log = logging.getLogger("higgs.auth")
# The pages hold no data (their API calls carry the key the user types), so a browser can load them.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/playground", "/docs"})
OPEN_PREFIXES = ("/docs/assets/",)


WS_SUBPROTOCOL = "higgs-audio"
WS_KEY_PREFIX = "higgs-api-key."


def _presented() -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    if "X-API-Key" in request.headers:
        return request.headers["X-API-Key"].strip()
    for entry in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if entry.strip().startswith(WS_KEY_PREFIX):
            return entry.strip()[len(WS_KEY_PREFIX):]
    return ""


def install(app: Flask, api_key: str) -> None:
    if not api_key:
        log.warning("no API key set (--api-key / HIGGS_API_KEY): the server is open to anyone who can reach it")
        return
    expected = api_key.encode()

    @app.before_request
    def _require_key():
        if request.method == "OPTIONS" or request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        if not hmac.compare_digest(_presented().encode(), expected):
            raise Unauthorized("missing or invalid API key")
        return None
