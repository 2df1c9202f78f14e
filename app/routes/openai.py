"""The OpenAI-compatible speech API: POST /v1/audio/speech, GET /v1/audio/voices, GET /v1/models.

The official `openai` SDKs work against it (base_url=http://HOST:8000/v1). Errors on these paths use OpenAI's
error body (app/errors.py). The spec's sampling fields are accepted as extensions (extra_body in the SDK).
"""

from __future__ import annotations

import logging
import time
from functools import partial

from flask import request
from flask_smorest import Blueprint

from model_pool.errors import HiggsError, UnknownVoice
from model_pool.request import SAMPLE_RATE

from .. import metrics
from ..encoder import StreamEncoder
from ..errors import UnknownModel
from ..runtime import prepare_job, runtime
from ..schemas import SpeechSchema
from ..speech_stream import audio_body, sse_body
from ..streaming import client_disconnect_probe, stream_response

log = logging.getLogger("higgs.openai")
blp = Blueprint("openai", __name__, url_prefix="/v1", description="OpenAI-compatible speech API")

MODEL_ID = "higgs-audio-v2"
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx",
                           "sage", "shimmer", "verse"})
_CREATED = int(time.time())
_OUR_FIELDS = {"text": "input", "ref_audio": "voice", "scene_prompt": "instructions"}


def _model_ids() -> list[str]:
    return [MODEL_ID, runtime().settings.model_path]


def _voice(name: str | None) -> str | None:
    """A library voice wins; OpenAI's built-in names that are not in the library mean the smart voice. Other
    names pass through untouched (the planner reads and checks them once)."""
    if name is None or name.lower() not in OPENAI_VOICES:
        return name
    try:
        runtime().voices.get(name, field="voice")
        return name
    except UnknownVoice:
        log.info("voice '%s' is an OpenAI voice this server does not have: using the smart voice", name)
        return None


@blp.route("/audio/speech", methods=["POST"])
@blp.arguments(SpeechSchema)
@blp.response(200, description="the audio in response_format, sent as it is generated; or, with "
                               "stream_format sse, speech.audio.delta events then speech.audio.done",
              content_type="audio/mpeg")
def speech(args):
    """Text to speech, OpenAI style."""
    if args["model"] not in _model_ids() and args["model"] not in OPENAI_MODEL_ALIASES:
        raise UnknownModel(args["model"], _model_ids())
    fields = {**args, "text": args["input"], "ref_audio": _voice(args["voice"]),
              "scene_prompt": args["instructions"] if args["instructions"] is not None else "quiet_indoor"}
    try:
        rt, job = prepare_job(fields)
    except HiggsError as error:  # name the field as the caller sent it
        if getattr(error, "field", None) in _OUR_FIELDS:
            error.field = _OUR_FIELDS[error.field]
        raise
    rt.service.admit()  # every check and a place in the queue before the first byte
    encoder = StreamEncoder(args["response_format"], args["speed"])
    finished = partial(metrics.observe_generation, "/v1/audio/speech", sample_rate=SAMPLE_RATE)
    sse = args["stream_format"] == "sse"
    body = (sse_body if sse else audio_body)(rt.service, job, encoder, rt.settings.ping_interval,
                                             client_disconnect_probe(request.environ), finished)
    return stream_response(body, "text/event-stream" if sse else encoder.mime, job.request_id)


@blp.route("/audio/voices", methods=["GET"])
def voices():
    """The voices `voice` accepts: the library's, then its speaker profiles as profile:NAME."""
    rt = runtime()
    data = [{"id": v["name"], "object": "voice", "name": v["name"], "type": "library", "synthetic": v["synthetic"]}
            for v in rt.voices.list()]
    data += [{"id": f"profile:{name}", "object": "voice", "name": name, "type": "profile", "description": text}
             for name, text in rt.voices.profiles().items()]
    return {"object": "list", "data": data}


@blp.route("/models", methods=["GET"])
def models():
    """The model this server serves, under its short id and its checkpoint path."""
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": _CREATED,
                                        "owned_by": "bosonai"} for model_id in _model_ids()]}
