"""The realtime session's wire format: vllm-omni's messages and session.config fields (so its clients, and
sglang-omni's, work unchanged), plus input.cancel.

client -> server (JSON text messages)
  {"type": "session.config", ...}         first; again between utterances (a new voice starts a new context).
      vllm-omni's StreamingSpeechSessionConfig: model, voice (alias speaker), task_type, language, instructions,
      response_format (wav), stream_audio, speed, max_new_tokens, seed, initial_codec_chunk_frames, ref_audio,
      ref_text, split_granularity; sglang-omni's references, temperature, top_k, top_p and its nested "session"
      object; our ras_win_len, ras_win_max_num_repeat, sample_rate (24000). Fields with no meaning for Higgs
      (x_vector_only_mode, speaker_embedding, word_timestamps, ...) are refused by name, saying why.
  {"type": "input.text", "text": "..."}   append to the utterance; sentences are spoken as they complete
  {"type": "input.done"}                  end of the utterance: speak what is buffered, keep the connection
  {"type": "input.cancel"}                barge-in: stop now, drop what is queued and buffered
  {"type": "session.close"}               close once what is queued has been spoken
server -> client
  {"type": "audio.start", utterance_index, sentence_index, sentence_text, format, sample_rate, channels, seed}
  binary frames: the sentence as one complete file in `format`; with pcm (always) or stream_audio, PCM16
      little-endian mono chunks as they are made
  {"type": "audio.done", utterance_index, sentence_index, total_bytes, error}
  {"type": "session.done", utterance_index, total_sentences}   after an utterance's last sentence
  {"type": "cancelled", utterance_index}                       nothing of that utterance follows it
  {"type": "error", message, field}
Close codes: 1000 after session.close or an idle timeout; 1008 after an error when the first message was not a valid
session.config; 1009 for a message over its size limit; 1013 when the first session.config cannot be served now
(the model is loading, the server is stopping).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

import marshmallow as ma
from marshmallow import fields, validate

from model_pool.request import SAMPLE_RATE, GenerationRequest
from model_pool.sentences import GRANULARITIES

from ..errors import status_for
from ..schemas import Flag, GenerateSchema, Number, Text, VoiceTaskFields, to_generation_request
from ..serving.encoder import FORMAT_NAMES
from ..serving.speaker import resolve_speaker
from ..serving.speech import check_model

CLIENT_TYPES = ("session.config", "input.text", "input.done", "input.cancel", "session.close")
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN = 1000, 1001, 1008, 1009, 1013
CHANNELS = 1
# Our generation fields under the names a session client sends them: errors name the field the client knows.
SESSION_NAMES = {"ref_audio": "voice", "scene_prompt": "instructions", "voice_description": "instructions"}
_REQUEST_DEFAULTS = {f.name: getattr(GenerationRequest(text=""), f.name) for f in dataclass_fields(GenerationRequest)}


class ProtocolError(ValueError):
    """A message the session cannot take: an error event, then the session goes on (or closes with `close`)."""

    def __init__(self, message: str, field: str | None = None, close: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.close = close


def close_code(error: Exception) -> int:
    """How a session that could not start ends: 1013 (try again later) when the server cannot serve it now (503s),
    1008 when the client's first message was wrong."""
    return CLOSE_TRY_AGAIN if status_for(error) == 503 else CLOSE_POLICY


class SessionConfigSchema(VoiceTaskFields, GenerateSchema):
    """session.config: /v1/audio/speech's fields that make sense for a stream of sentences, as vllm-omni names them."""

    class Meta:
        exclude = ("text", "scene_prompt", "chunk_method", "chunk_max_word_num", "chunk_max_num_turns",
                   "generation_chunk_buffer_size")

    type = fields.String(required=True, validate=validate.Equal("session.config"))
    model = Text(load_default=None, allow_none=True, validate=validate.Length(max=200))
    voice = Text(load_default=None, allow_none=True, validate=validate.Length(max=600),
                 metadata={"description": "a library voice, an alias, profile:NAME, or none for a smart voice that "
                                          "then stays for the whole session"})
    instructions = Text(load_default=None, allow_none=True, validate=validate.Length(max=4096))
    response_format = fields.String(load_default="wav", validate=validate.OneOf(FORMAT_NAMES))
    stream_audio = Flag(load_default=False)
    speed = Number(load_default=1.0, allow_none=True, validate=validate.Range(0.25, 4.0))
    split_granularity = fields.String(load_default="sentence", validate=validate.OneOf(GRANULARITIES))
    sample_rate = fields.Integer(load_default=SAMPLE_RATE, strict=True, validate=validate.Equal(SAMPLE_RATE))

    @ma.pre_load
    def _nested_session(self, data, **kwargs):
        # sglang-omni also takes the fields inside a "session" object: {"type": "session.config", "session": {...}}
        if isinstance(data, dict) and isinstance(data.get("session"), dict):
            data = {"type": data.get("type"), **data["session"]}
        return data

    @ma.validates_schema
    def _streamed_audio_is_pcm(self, data, **kwargs):
        if data.get("stream_audio") and data.get("response_format") != "pcm":
            raise ma.ValidationError("stream_audio sends raw PCM chunks: set response_format to pcm, or leave "
                                     "stream_audio off for one complete file per sentence", "response_format")


@dataclass(frozen=True)
class SessionOptions:
    """What a config says beyond the generation request: how its audio is sent and its text cut."""

    response_format: str
    speed: float
    split_granularity: str
    identity: tuple  # the voice and scene: while these stay, a new config keeps the conversation's context


def parse(raw, max_text_bytes: int) -> dict:
    """One client message -> a dict with a known `type` (ProtocolError otherwise). Only a session.config may be larger
    than max_text_bytes (it may carry a clip); the WebSocket itself refuses what is over the config limit."""
    if isinstance(raw, (bytes, bytearray)):
        raise ProtocolError("binary frames are not accepted: send JSON text messages", "message")
    size = len(raw.encode("utf-8"))
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        message = None
    kind = message.get("type") if isinstance(message, dict) else None
    if size > max_text_bytes and kind != "session.config":
        raise ProtocolError(f"a message is at most {max_text_bytes // 1024} KB (a session.config more): this one "
                            f"is {size // 1024} KB", "message", close=CLOSE_TOO_BIG)
    if message is None:
        raise ProtocolError("the message is not JSON", "message")
    if not isinstance(message, dict):
        raise ProtocolError("a message is a JSON object with a \"type\"", "message")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type {str(kind)[:40]!r}; expected one of {', '.join(CLIENT_TYPES)}",
                            "type")
    if kind == "input.text":
        text = message.get("text")
        if not isinstance(text, str):
            raise ProtocolError("input.text needs a \"text\" string", "text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("input.text holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which no "
                                "tokenizer takes: send valid Unicode text", "text") from None
    return message


def config_request(message: dict, max_new_tokens: int) -> tuple[GenerationRequest, SessionOptions]:
    """A validated session.config -> the request its sentences are generated with, and the session's options.
    Raises ProtocolError (a bad field) or the HiggsError of a check (an unknown model or voice, a bad clip)."""
    try:
        args = SessionConfigSchema().load(message)
    except ma.ValidationError as exc:
        field, detail = next(iter(exc.normalized_messages().items()))
        while isinstance(detail, (list, dict)) and detail:
            detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
        if detail == "Unknown field.":
            detail = "unknown field (docs/realtime.md lists the fields a session.config takes)"
        raise ProtocolError(f"invalid field '{field}': {detail}", field) from None
    if args["model"] is not None:
        check_model(args["model"])
    who = resolve_speaker(args)
    fields_ = {**_REQUEST_DEFAULTS, **args, "text": "", "ref_audio": who.ref_audio, "scene_prompt": who.scene_prompt,
               "voice_description": who.voice_description}
    request = to_generation_request(fields_, max_new_tokens, clip=who.clip, names=SESSION_NAMES)
    return request, SessionOptions(args["response_format"], args["speed"] or 1.0, args["split_granularity"],
                                   who.identity)


def event(kind: str, **data) -> str:
    return json.dumps({"type": kind, **data}, ensure_ascii=False)
