"""POST /generate, /generate-stream (SSE) and /generate-upload."""

from __future__ import annotations

from flask import Response, g, stream_with_context
from flask_smorest import Blueprint

from model_pool.request import SAMPLE_RATE

from ..audio_format import wav_base64
from ..runtime import runtime
from ..schemas import (
    GenerateResponseSchema,
    GenerateSchema,
    UploadFilesSchema,
    UploadFormSchema,
    to_generation_request,
)
from ..streaming import event_stream
from ..uploads import read_upload

blp = Blueprint("generate", __name__, description="Text to speech")


def _prepare(args: dict, clip=None):
    rt = runtime()
    # Every input check happens here, before any model work and before a stream's first byte.
    job = rt.service.prepare(to_generation_request(args, rt.settings.max_new_tokens, clip))
    job.request_id = g.request_id
    rt.require_ready()
    return rt, job


def _generate(args: dict, clip=None) -> dict:
    rt, job = _prepare(args, clip)
    samples = rt.service.generate(job)
    return {
        "success": True,
        "message": "Audio generated successfully",
        "audio_base64": wav_base64(samples),
        "sampling_rate": SAMPLE_RATE,
        "duration": samples.shape[0] / SAMPLE_RATE,
        "generated_text": args["text"],
    }


@blp.route("/generate", methods=["POST"])
@blp.arguments(GenerateSchema)
@blp.response(200, GenerateResponseSchema)
def generate(args):
    """Generate speech; the answer holds a base64 WAV."""
    return _generate(args)


@blp.route("/generate-stream", methods=["POST"])
@blp.arguments(GenerateSchema)
@blp.response(200, description="Server-Sent Events: start, audio (base64 PCM16 mono 24 kHz)..., done or error",
              content_type="text/event-stream")
def generate_stream(args):
    """Stream speech as it is generated (Server-Sent Events)."""
    rt, job = _prepare(args)
    events = event_stream(rt.service, job, args["text"], rt.settings.ping_interval)
    return Response(
        stream_with_context(events),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-ID": job.request_id},
    )


@blp.route("/generate-upload", methods=["POST"])
@blp.arguments(UploadFormSchema, location="form")
@blp.arguments(UploadFilesSchema, location="files")
@blp.response(200, GenerateResponseSchema)
def generate_upload(form, files):
    """Generate speech cloning an uploaded reference clip (multipart/form-data)."""
    settings = runtime().settings
    clip = read_upload(files.get("ref_audio_file"), settings.max_upload_bytes, settings.max_upload_seconds,
                       form.pop("ref_text", None))
    return _generate(form, clip)
