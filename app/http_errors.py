"""Errors only HTTP can cause (app/errors.py answers them through their `http_status`, like every HiggsError)."""

from __future__ import annotations

from model_pool.errors import InvalidRequest


class NotJson(InvalidRequest):
    """A JSON endpoint got a body of another type (`curl -d` sends a form): say so instead of listing missing
    fields."""

    http_status = 415

    def __init__(self, mimetype: str):
        got = f"Content-Type '{mimetype}'" if mimetype else "no Content-Type"
        super().__init__("body", f"the body must be JSON, sent with Content-Type: application/json (got {got})")
