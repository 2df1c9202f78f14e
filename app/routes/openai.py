"""The OpenAI-compatible speech API: POST /v1/audio/speech, GET /v1/audio/voices, GET /v1/models.

The official `openai` SDKs work against it (base_url=http://HOST:8000/v1). Errors on these paths use OpenAI's
error body (app/errors.py). The spec's sampling fields are accepted as extensions (extra_body in the SDK).
"""

from __future__ import annotations

import time
from pathlib import Path

from model_pool.defaults import DEFAULT_MODEL

from ..runtime import runtime
from ..schemas import SpeechSchema
from ..serving.speech import model_ids
from ..serving.speech import speech as serve_speech
from ..serving.voices import aliases_listing
from . import Blueprint

blp = Blueprint("openai", __name__, url_prefix="/v1", description="OpenAI-compatible speech API")
blp.error_shape = "openai"  # app/errors.py answers this blueprint's errors in OpenAI's shape
_CREATED = int(time.time())


@blp.route("/audio/speech", methods=["POST"])
@blp.arguments(SpeechSchema)
@blp.response(200, description="the audio in response_format, sent as it is generated; or, with "
                               "stream_format sse, speech.audio.delta events then speech.audio.done",
              content_type="audio/mpeg")
def speech(args):
    """Text to speech, OpenAI style; `stream: false` (an extension) asks for the complete file."""
    return serve_speech(args)


@blp.route("/audio/voices", methods=["GET"])
def voices():
    """The voices `voice` accepts: the library's, its speaker profiles as profile:NAME, then the aliases."""
    rt = runtime()
    data = [{"id": v["name"], "object": "voice", "name": v["name"], "type": "library", "synthetic": v["synthetic"]}
            for v in rt.voices.list()]
    data += [{"id": f"profile:{name}", "object": "voice", "name": name, "type": "profile", "description": text}
             for name, text in rt.voices.profiles().items()]
    data += aliases_listing()  # --voice-aliases: OpenAI's names for library voices
    return {"object": "list", "data": data}


@blp.route("/models", methods=["GET"])
def models():
    """The model this server serves, under its short ids. For a local --model-path: ours and the directory's name,
    not the hub id (the directory may hold any checkpoint, a demo's random one too); `model` still accepts it."""
    path = runtime().settings.model_path
    listed = [i for i in model_ids(path) if not (Path(path).exists() and i == DEFAULT_MODEL)]
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": _CREATED,
                                        "owned_by": "bosonai"} for model_id in listed]}
