"""The realtime session's wire format: vllm-omni's message names (so its clients work), plus input.cancel.

client -> server (JSON text messages)
  {"type": "session.config", voice, instructions, temperature, top_k, top_p, seed, ras_win_len,
   ras_win_max_num_repeat, max_new_tokens, model, response_format: "pcm", sample_rate: 24000}
      first; again between utterances (a new voice or instructions start a new context)
  {"type": "input.text", "text": "..."}   append to the utterance; sentences are spoken as they complete
  {"type": "input.done"}                  end of the utterance: speak what is buffered, keep the connection
  {"type": "input.cancel"}                barge-in: stop now, drop what is queued and buffered
  {"type": "session.close"}
server -> client
  {"type": "audio.start", utterance_index, sentence_index, sentence_text, format: "pcm", sample_rate: 24000, seed}
  binary frames: PCM16 little-endian mono
  {"type": "audio.done", utterance_index, sentence_index, total_bytes}
  {"type": "session.done", utterance_index, total_sentences}   after an utterance's last sentence
  {"type": "cancelled", utterance_index}                       nothing of that utterance follows it
  {"type": "error", message, field}
"""

from __future__ import annotations

import json
from dataclasses import fields as dataclass_fields

import marshmallow as ma
from marshmallow import fields, validate

from model_pool.defaults import DEFAULT_SCENE
from model_pool.request import SAMPLE_RATE, GenerationRequest

from ..schemas import GenerateSchema, Text, to_generation_request

CLIENT_TYPES = ("session.config", "input.text", "input.done", "input.cancel", "session.close")
# Our generation fields under the names a session client sends them: errors name the field the client knows.
SESSION_NAMES = {"ref_audio": "voice", "scene_prompt": "instructions"}
_REQUEST_DEFAULTS = {f.name: getattr(GenerationRequest(text=""), f.name) for f in dataclass_fields(GenerationRequest)}


class ProtocolError(ValueError):
    """A message the session cannot take; the session answers an error event and goes on."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class SessionConfigSchema(GenerateSchema):
    """session.config: /v1/audio/speech's fields that make sense for a stream of sentences."""

    class Meta:
        exclude = ("text", "ref_audio", "scene_prompt", "chunk_method", "chunk_max_word_num", "chunk_max_num_turns",
                   "generation_chunk_buffer_size")

    type = fields.String(required=True, validate=validate.Equal("session.config"))
    model = Text(load_default=None, allow_none=True, validate=validate.Length(max=200))
    voice = Text(load_default=None, allow_none=True, validate=validate.Length(max=600),
                 metadata={"description": "a library voice, an alias, profile:NAME, or none for a smart voice that "
                                          "then stays for the whole session"})
    instructions = Text(load_default=None, allow_none=True, validate=validate.Length(max=4096))
    response_format = fields.String(load_default="pcm", validate=validate.Equal("pcm"))
    sample_rate = fields.Integer(load_default=SAMPLE_RATE, strict=True, validate=validate.Equal(SAMPLE_RATE))


def parse(raw) -> dict:
    """One client message -> a dict with a known `type` (ProtocolError otherwise)."""
    if isinstance(raw, (bytes, bytearray)):
        raise ProtocolError("binary frames are not accepted: send JSON text messages", "message")
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("the message is not JSON", "message") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message is a JSON object with a \"type\"", "message")
    kind = message.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type {str(kind)[:40]!r}; expected one of {', '.join(CLIENT_TYPES)}",
                            "type")
    if kind == "input.text" and not isinstance(message.get("text"), str):
        raise ProtocolError("input.text needs a \"text\" string", "text")
    return message


def config_request(message: dict, resolve_voice, max_new_tokens: int) -> GenerationRequest:
    """A validated session.config -> the request its sentences are generated with (resolve_voice maps `voice`,
    aliases included, to the planner's ref_audio)."""
    try:
        args = SessionConfigSchema().load(message)
    except ma.ValidationError as exc:
        field, detail = next(iter(exc.normalized_messages().items()))
        while isinstance(detail, (list, dict)) and detail:
            detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
        raise ProtocolError(f"invalid field '{field}': {detail}", field) from None
    fields_ = {**_REQUEST_DEFAULTS, **args, "text": "", "ref_audio": resolve_voice(args["voice"]),
               "scene_prompt": args["instructions"] if args["instructions"] is not None else DEFAULT_SCENE}
    return to_generation_request(fields_, max_new_tokens, names=SESSION_NAMES)


def event(kind: str, **data) -> str:
    return json.dumps({"type": kind, **data}, ensure_ascii=False)
