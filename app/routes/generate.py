"""POST /generate, /generate-stream (SSE) and /generate-upload."""

from __future__ import annotations

from ..runtime import runtime
from ..schemas import GenerateFileSchema, GenerateResponseSchema, GenerateSchema, UploadFilesSchema, UploadFormSchema
from ..serving.spec_api import event_stream, whole_file
from ..uploads import read_upload
from . import Blueprint

blp = Blueprint("generate", __name__, description="Text to speech")


@blp.route("/generate", methods=["POST"])
@blp.arguments(GenerateFileSchema)
@blp.response(200, GenerateResponseSchema)
def generate(args):
    """Generate speech; the answer holds a base64 file (WAV unless response_format says otherwise)."""
    return whole_file(args, "/generate")


@blp.route("/generate-stream", methods=["POST"])
@blp.arguments(GenerateSchema)
@blp.response(200, description="Server-Sent Events: start, audio (base64 PCM16 mono 24 kHz)..., done or error",
              content_type="text/event-stream")
def generate_stream(args):
    """Stream speech as it is generated (Server-Sent Events)."""
    return event_stream(args)


@blp.route("/generate-upload", methods=["POST"])
@blp.arguments(UploadFormSchema, location="form")
@blp.arguments(UploadFilesSchema, location="files")
@blp.response(200, GenerateResponseSchema)
def generate_upload(form, files):
    """Generate speech cloning an uploaded reference clip (multipart/form-data)."""
    settings = runtime().settings
    clip = read_upload(files.get("ref_audio_file"), settings.max_upload_bytes, settings.max_upload_seconds,
                       form.pop("ref_text", None))
    return whole_file(form, "/generate-upload", clip)
