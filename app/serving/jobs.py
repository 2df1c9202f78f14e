"""A request body -> a prepared job and its place in the pool, before any byte of the answer is sent."""

from __future__ import annotations

from flask import g

from model_pool.pool import Reservation
from model_pool.service import PreparedJob

from ..runtime import Runtime, runtime
from ..schemas import to_generation_request


def prepare_job(args: dict, clip=None, names: dict | None = None) -> tuple[Runtime, PreparedJob, Reservation]:
    """Every input check (a 4xx naming the field as the client sent it, `names` mapping ours to theirs), then
    503 if the model is not loaded, then the prompts measured against the context, then a place in the pool (503
    at once when it is full). args: fields loaded by GenerateSchema (or a schema that maps onto its names)."""
    rt = runtime()
    request = to_generation_request(args, rt.settings.max_new_tokens, clip, names)
    job = rt.service.prepare(request, g.request_id)
    return rt, job, rt.service.admit()
