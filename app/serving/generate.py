"""Serving of /generate, /generate-upload (a whole file) and /generate-stream (Server-Sent Events)."""

from __future__ import annotations

import base64
from functools import partial

from flask import Response

from model_pool.request import SAMPLE_RATE
from model_pool.service import GenerationStats

from .. import metrics
from .encoder import encode_file
from .generation import collect, generation_events, stream_response, watch
from .jobs import prepare_job
from .sse import generate_stream


def whole_file(args: dict, endpoint: str, clip=None) -> dict:
    """Generate in full (the client's disconnect still stops it within a step), then answer the spec's JSON."""
    rt, job, reservation = prepare_job(args, clip)
    stats = GenerationStats()
    finished = partial(metrics.observe_generation, endpoint, sample_rate=SAMPLE_RATE)
    samples = collect(generation_events(rt.service, job, reservation, stats, watch(rt), finished, label="generate"))
    audio, content_type = encode_file(samples, args["response_format"])
    return {
        "success": True,
        "message": "Audio generated successfully",
        "audio_base64": base64.b64encode(audio).decode("ascii"),
        "response_format": args["response_format"],
        "content_type": content_type,
        "sampling_rate": SAMPLE_RATE,
        "duration": samples.shape[0] / SAMPLE_RATE,
        "generated_text": job.text,
    }


def event_stream(args: dict) -> Response:
    """Every check and a place in the pool before the first byte; then start, audio..., done or error."""
    rt, job, reservation = prepare_job(args)
    stats = GenerationStats()
    finished = partial(metrics.observe_generation, "/generate-stream", sample_rate=SAMPLE_RATE)
    events = generation_events(rt.service, job, reservation, stats, watch(rt), finished)
    return stream_response(generate_stream(job, events, stats), "text/event-stream", job.request_id)
