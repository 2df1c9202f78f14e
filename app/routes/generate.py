"""POST /generate, /generate-stream (SSE) and /generate-upload."""

from __future__ import annotations

import base64
import time
from functools import partial

from flask import request
from flask_smorest import Blueprint

from model_pool.request import SAMPLE_RATE
from model_pool.service import GenerationStats

from .. import metrics
from ..encoder import encode_file
from ..runtime import prepare_job, runtime
from ..schemas import (
    GenerateFileSchema,
    GenerateResponseSchema,
    GenerateSchema,
    UploadFilesSchema,
    UploadFormSchema,
)
from ..streaming import client_disconnect_probe, event_stream, stream_response
from ..uploads import read_upload

blp = Blueprint("generate", __name__, description="Text to speech")


def _generate(args: dict, endpoint: str, clip=None) -> dict:
    rt, job = prepare_job(args, clip)
    stats, started, outcome = GenerationStats(), time.perf_counter(), "error"
    try:
        samples = rt.service.generate(job, stats)
        outcome = "ok"
    finally:
        metrics.observe_generation(endpoint, outcome, stats, time.perf_counter() - started, SAMPLE_RATE)
    audio, content_type = encode_file(samples, args["response_format"])
    return {
        "success": True,
        "message": "Audio generated successfully",
        "audio_base64": base64.b64encode(audio).decode("ascii"),
        "response_format": args["response_format"],
        "content_type": content_type,
        "sampling_rate": SAMPLE_RATE,
        "duration": samples.shape[0] / SAMPLE_RATE,
        "generated_text": args["text"],
    }


@blp.route("/generate", methods=["POST"])
@blp.arguments(GenerateFileSchema)
@blp.response(200, GenerateResponseSchema)
def generate(args):
    """Generate speech; the answer holds a base64 file (WAV unless response_format says otherwise)."""
    return _generate(args, "/generate")


@blp.route("/generate-stream", methods=["POST"])
@blp.arguments(GenerateSchema)
@blp.response(200, description="Server-Sent Events: start, audio (base64 PCM16 mono 24 kHz)..., done or error",
              content_type="text/event-stream")
def generate_stream(args):
    """Stream speech as it is generated (Server-Sent Events)."""
    rt, job = prepare_job(args)
    rt.service.admit()  # a full queue is a 503 now, not an error event later

    finished = partial(metrics.observe_generation, "/generate-stream", sample_rate=SAMPLE_RATE)
    events = event_stream(rt.service, job, args["text"], rt.settings.ping_interval,
                          client_gone=client_disconnect_probe(request.environ), on_finish=finished)
    return stream_response(events, "text/event-stream", job.request_id)


@blp.route("/generate-upload", methods=["POST"])
@blp.arguments(UploadFormSchema, location="form")
@blp.arguments(UploadFilesSchema, location="files")
@blp.response(200, GenerateResponseSchema)
def generate_upload(form, files):
    """Generate speech cloning an uploaded reference clip (multipart/form-data)."""
    settings = runtime().settings
    clip = read_upload(files.get("ref_audio_file"), settings.max_upload_bytes, settings.max_upload_seconds,
                       form.pop("ref_text", None))
    return _generate(form, "/generate-upload", clip)
