"""The voice library API: add, fetch and delete named voices in the voice directory.

Changes are files in the shared directory, read on every request, so every worker (and every host sharing the
directory) sees them without a restart.
"""

from __future__ import annotations

from flask import send_file

from model_pool.request import SAMPLE_RATE

from ..runtime import runtime
from ..schemas import VoiceSchema, VoiceUploadFilesSchema, VoiceUploadFormSchema
from ..uploads import read_upload
from . import Blueprint

blp = Blueprint("voices", __name__, description="Voice library")


@blp.route("/voices", methods=["POST"])
@blp.arguments(VoiceUploadFormSchema, location="form")
@blp.arguments(VoiceUploadFilesSchema, location="files")
@blp.response(201, VoiceSchema)
def add_voice(form, files):
    """Store a voice: NAME.wav (24 kHz mono) + NAME.txt; 409 if it exists, unless overwrite=true."""
    rt = runtime()
    clip = read_upload(files["audio"], rt.settings.max_upload_bytes, rt.settings.max_upload_seconds, field="audio")
    return rt.voices.save(form["name"], clip.samples, SAMPLE_RATE, form["transcript"], overwrite=form["overwrite"])


@blp.route("/voices/<name>", methods=["DELETE"])
@blp.response(204)
def delete_voice(name):
    """Remove a voice (its audio and transcript)."""
    runtime().voices.delete(name)


@blp.route("/voices/<name>/audio", methods=["GET"])
@blp.response(200, description="the voice's reference audio", content_type="audio/wav")
def voice_audio(name):
    """Download a voice's reference clip."""
    voice = runtime().voices.get(name, field="name")
    return send_file(voice.audio_path, mimetype=f"audio/{voice.audio_path.suffix[1:]}", max_age=0)
