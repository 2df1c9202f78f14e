"""The one place where failures become HTTP answers: one status per error type, one JSON shape.

Body: {"success": false, "code": 400, "status": "Bad Request", "message": "...", "field": "temperature",
"errors": {"temperature": ["..."]}}. A 500 says only "internal server error" and the request id; the traceback
goes to the log. Under /v1/ (the OpenAI-compatible API) the same status and message take OpenAI's shape:
{"error": {"message": "...", "type": "invalid_request_error", "param": "voice", "code": "invalid_value"}}.
"""

from __future__ import annotations

import logging

from flask import g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from model_pool.errors import (
    Cancelled,
    GenerationFailed,
    HiggsError,
    InvalidRequest,
    NotReady,
    PoolBusy,
    UnknownScene,
    UnknownVoice,
)
from model_pool.prompt.library import VoiceExists

log = logging.getLogger("higgs.errors")


class Unauthorized(HiggsError):
    pass


class PayloadTooLarge(InvalidRequest):
    pass


class UnknownModel(HiggsError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown model '{name}'; this server serves: {', '.join(known)}")
        self.field = "model"


class StreamAborted(Exception):
    """Raised inside an audio body after its first byte: the server drops the connection (no final chunk),
    so the client sees a broken transfer instead of a short file that looks whole."""


# Most specific first: the first matching entry decides the status.
STATUS_BY_ERROR: list[tuple[type[HiggsError], int]] = [
    (PayloadTooLarge, 413),
    (InvalidRequest, 400),
    (UnknownVoice, 404),
    (UnknownScene, 404),
    (UnknownModel, 404),
    (VoiceExists, 409),
    (Unauthorized, 401),
    (PoolBusy, 503),
    (NotReady, 503),
    (Cancelled, 499),  # logged only: the client that could read it is gone
    (GenerationFailed, 500),  # its message is safe to show: the model produced unusable scores
]

_STATUS_NAMES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
                 499: "Client Closed Request", 500: "Internal Server Error", 503: "Service Unavailable"}


def status_for(error: Exception) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


def public_message(error: Exception) -> str:
    """What a client may read about an error (used for SSE error events too)."""
    return error.message if isinstance(error, HiggsError) else "internal server error"


def error_body(status: int, message: str, field: str | None = None, errors: dict | None = None) -> dict:
    body = {"success": False, "code": status, "status": _STATUS_NAMES.get(status, "Error"), "message": message}
    if field:
        body["field"] = field
        body["errors"] = errors or {field: [message]}
    elif errors:
        body["errors"] = errors
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return body


# OpenAI's error body on the OpenAI-compatible paths, so its SDKs raise their usual exceptions with our message.
_OPENAI_TYPES = {401: "authentication_error", 404: "not_found_error", 499: "cancelled", 503: "server_error",
                 500: "server_error"}
_OPENAI_CODES = {400: "invalid_value", 401: "invalid_api_key", 404: "not_found", 409: "conflict",
                 413: "payload_too_large", 503: "service_unavailable", 500: "internal_error"}


def openai_body(status: int, body: dict) -> dict:
    return {"error": {"message": body["message"], "type": _OPENAI_TYPES.get(status, "invalid_request_error"),
                      "param": body.get("field"), "code": _OPENAI_CODES.get(status)}}


def _respond(status: int, body: dict, headers: dict | None = None):
    if has_request_context() and request.path.startswith("/v1/"):
        body = openai_body(status, body)
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_higgs_error(error: HiggsError):
    status = status_for(error)
    headers = {}
    if isinstance(error, (PoolBusy, NotReady)):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="higgs-audio"'
    log.info("%s %d: %s", type(error).__name__, status, error.message)
    return _respond(status, error_body(status, error.message, getattr(error, "field", None)), headers)


def _flatten(messages) -> dict:
    """webargs nests messages by location ({"json": {"temperature": [...]}}); clients want field names."""
    if isinstance(messages, dict) and len(messages) == 1 and next(iter(messages)) in ("json", "form", "files"):
        messages = next(iter(messages.values()))
    if isinstance(messages, dict):
        return messages
    return {"_schema": list(messages) if isinstance(messages, (list, tuple)) else [str(messages)]}


def handle_http_exception(error: HTTPException):
    data = getattr(error, "data", None) or {}
    errors = _flatten(data.get("messages")) if data.get("messages") else None
    status = error.code or 500
    if errors:
        fields = [k for k in errors if k != "_schema"]
        field = fields[0] if fields else None
        detail = errors[field] if field else errors.get("_schema")
        message = f"invalid field '{field}': {_first(detail)}" if field else f"invalid request: {_first(detail)}"
        body = error_body(status, message, field, errors)
    else:
        body = error_body(status, error.description or error.name)
    body["status"] = error.name
    return _respond(status, body, data.get("headers"))


def _first(detail) -> str:
    while isinstance(detail, (list, tuple)) and detail:
        detail = detail[0]
    if isinstance(detail, dict):
        return _first(next(iter(detail.values()), ""))
    return str(detail)


def handle_unexpected(error: Exception):
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("unhandled error (request %s)", getattr(g, "request_id", "-"))
    return _respond(500, error_body(500, "internal server error"))


def register(app) -> None:
    app.register_error_handler(HiggsError, handle_higgs_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
