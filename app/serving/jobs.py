"""A request body -> a prepared job and its generation handle, before any byte of the answer is sent: the one way
every endpoint starts a generation."""

from __future__ import annotations

from functools import partial

from flask import g

from model_pool.lifecycle import Generation
from model_pool.request import SAMPLE_RATE
from model_pool.service import PreparedJob

from .. import metrics
from ..runtime import runtime
from ..schemas import to_generation_request


def start_job(args: dict, endpoint: str, label: str, clip=None,
              names: dict | None = None) -> tuple[PreparedJob, Generation]:
    """Every input check (a 4xx naming the field as the client sent it, `names` mapping ours to theirs), then 503
    if the model is not loaded, then the prompts measured against the context, then a place in the pool (503 at
    once when it is full). The handle records one metric observation for `endpoint` when it ends.
    args: fields loaded by GenerateSchema (or a schema that maps onto its names)."""
    rt = runtime()
    request = to_generation_request(args, rt.settings.max_new_tokens, clip, names)
    job = rt.service.prepare(request, g.request_id)
    observe = partial(metrics.observe_generation, endpoint, sample_rate=SAMPLE_RATE)
    return job, rt.service.start(job, observe, label)
