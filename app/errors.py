"""The one place where failures become HTTP answers: one JSON shape, the status each error type carries.

Every error a user can cause is a HiggsError subclass whose class attributes say its status and, where waiting
helps, its Retry-After (model_pool/errors.py; the HTTP-only ones below), found along the class hierarchy.

Body: {"success": false, "code": 400, "status": "Bad Request", "message": "...", "field": "temperature",
"errors": {"temperature": ["..."]}}. A 500 says only "internal server error" and the request id; the traceback
goes to the log. A blueprint that sets `error_shape = "openai"` (the OpenAI-compatible API) gets the same status
and message in OpenAI's shape: {"error": {"message": "...", "type": "invalid_request_error", "param": "voice",
"code": "invalid_value"}}.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from flask import current_app, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from model_pool.errors import HiggsError, InvalidRequest, StorageError

log = logging.getLogger("higgs.errors")


class UnknownModel(HiggsError):
    http_status = 404

    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown model '{name}'; this server serves: {', '.join(known)}")
        self.field = "model"


class PayloadTooLarge(InvalidRequest):
    """A body or an upload over its size limit, refused before it is read further."""

    http_status = 413


class StreamAborted(Exception):
    """Raised inside an audio body after its first byte: the server drops the connection (no final chunk),
    so the client sees a broken transfer instead of a short file that looks whole."""


class SessionsFull(HiggsError):
    """Every realtime session this worker admits is open; refused before the WebSocket handshake."""

    http_status = 503
    retry_after = 5


class ForbiddenOrigin(HiggsError):
    """A WebSocket upgrade from a page whose origin --cors-origins does not allow (cross-site WebSocket hijacking)."""

    http_status = 403


class Unauthorized(HiggsError):
    """No API key, or the wrong one (app/auth.py)."""

    http_status = 401


def status_for(error: Exception) -> int:
    return error.http_status if isinstance(error, HiggsError) else 500


def _status_name(status: int) -> str:
    if status == 499:
        return "Client Closed Request"  # nginx's code: not in the IANA registry
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def public_message(error: Exception) -> str:
    """What a client may read about an error (used for SSE error events too)."""
    return error.message if isinstance(error, HiggsError) else "internal server error"


def error_body(status: int, message: str, field: str | None = None, errors: dict | None = None) -> dict:
    body = {"success": False, "code": status, "status": _status_name(status), "message": message}
    if field:
        body["field"] = field
        body["errors"] = errors or {field: [message]}
    elif errors:
        body["errors"] = errors
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return body


# OpenAI's error body on the OpenAI-compatible blueprint, so its SDKs raise their usual exceptions with our message.
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 499: "cancelled",
                 503: "server_error", 500: "server_error", 507: "server_error"}
_OPENAI_CODES = {400: "invalid_value", 401: "invalid_api_key", 403: "forbidden", 404: "not_found", 409: "conflict",
                 413: "payload_too_large", 503: "service_unavailable", 500: "internal_error",
                 507: "insufficient_storage"}


def openai_body(status: int, body: dict) -> dict:
    return {"error": {"message": body["message"], "type": _OPENAI_TYPES.get(status, "invalid_request_error"),
                      "param": body.get("field"), "code": _OPENAI_CODES.get(status)}}


def _shape() -> str | None:
    """The error shape of the blueprint the request went to (None: ours)."""
    if not has_request_context() or request.blueprint is None:
        return None
    return getattr(current_app.blueprints.get(request.blueprint), "error_shape", None)


def _respond(status: int, body: dict, headers: dict | None = None):
    if _shape() == "openai":
        body = openai_body(status, body)
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_higgs_error(error: HiggsError):
    status = status_for(error)
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="higgs-audio"'
    if isinstance(error, StorageError):  # the operator's problem, with the path they need; the client gets less
        log.warning("%s %d: %s (%s)", type(error).__name__, status, error.message, error.path)
    else:
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
