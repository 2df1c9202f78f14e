"""The spec's endpoints: /generate and /generate-upload (a whole file, as JSON) and /generate-stream (Server-Sent
Events)."""

from __future__ import annotations

import base64

from flask import Response

from model_pool.guard import finish_fields
from model_pool.lifecycle import collect
from model_pool.request import SAMPLE_RATE

from .encoder import encode_file
from .jobs import start_job
from .responses import client_watch, stream_response
from .sse import spec_events


def whole_file(args: dict, endpoint: str, clip=None) -> dict:
    """Generate in full (the client's disconnect still stops it within a step), then answer the spec's JSON."""
    job, handle = start_job(args, endpoint, "generate", clip)
    samples = collect(handle.events(client_watch()))
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
        "seed": job.seed,
        **finish_fields(handle.stats),
    }


def event_stream(args: dict) -> Response:
    """Every check and a place in the pool before the first byte; then start, audio..., done or error."""
    job, handle = start_job(args, "/generate-stream", "stream")
    return stream_response(spec_events(job, handle.events(client_watch()), handle.stats), "text/event-stream",
                           handle)
