"""Marshmallow schemas: the single source of the wire format (and of the OpenAPI document)."""

from __future__ import annotations

import marshmallow as ma
from flask_smorest.fields import Upload
from marshmallow import fields, validate

from model_pool.defaults import MAX_RAS_WINDOW, MAX_TEMPERATURE
from model_pool.request import CHUNK_METHODS, GenerationRequest, ReferenceClip, SamplingParams

from .serving.encoder import FORMAT_NAMES


def _from_form(field: fields.Field) -> bool:
    """JSON has numbers and booleans, so in a JSON body "50" where a number belongs is a mistake (a 422); a form
    carries every value as text, so a form schema (`form = True`) takes "50"."""
    return getattr(field.root, "form", False)


class WholeNumber(fields.Integer):
    """An integer that refuses 2.5 (plain Integer truncates it) and booleans; "30" only from a form."""

    def _validated(self, value):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self.make_error("invalid")
        if isinstance(value, str) and not (_from_form(self) and value.strip().lstrip("+-").isdigit()):
            raise self.make_error("invalid")
        return super()._validated(value)


class Number(fields.Float):
    """A float; "0.7" only from a form."""

    def _validated(self, value):
        if isinstance(value, str) and not _from_form(self):
            raise self.make_error("invalid")
        return super()._validated(value)


class Flag(fields.Boolean):
    """A boolean; "true" / "false" (and Boolean's other spellings) only from a form."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool) and not _from_form(self):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Text(fields.String):
    """A string that is valid Unicode: JSON escapes can carry lone surrogates ("\\ud800"), which no encoder or
    tokenizer accepts."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ma.ValidationError("must be valid Unicode text (it holds a lone surrogate)") from None
        return text


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ma.ValidationError("must not be empty or only whitespace")


# The request defaults are model_pool's (one definition): the schemas only say them on the wire.
_SAMPLING = SamplingParams()
_REQUEST = GenerationRequest(text="")


class GenerateSchema(ma.Schema):
    """The generation and chunking fields of the spec, shared by /generate, /generate-stream and the form
    fields of /generate-upload."""

    text = Text(required=True, validate=[validate.Length(min=1), _not_blank],
                metadata={"description": "the text to speak; [SPEAKERn] tags make a dialogue (at most the server's "
                                         "max_text_chars, 20000 unless configured)"})
    ref_audio = Text(load_default=None, allow_none=True, validate=validate.Length(max=600),
                              metadata={"description": "voice name, comma-separated names per speaker, or profile:NAME"})
    scene_prompt = Text(load_default=_REQUEST.scene_prompt, allow_none=True, validate=validate.Length(max=2000),
                                 metadata={"description": "scene name, free-text scene description, or empty"})
    temperature = Number(load_default=_SAMPLING.temperature, validate=validate.Range(0.0, MAX_TEMPERATURE),
                               metadata={"description": "sampling temperature; 0 (and anything below 1e-5) is "
                                                        "greedy"})
    top_k = WholeNumber(load_default=_SAMPLING.top_k, validate=validate.Range(min=0),
                           metadata={"description": "top-k sampling; 0 turns it off"})
    top_p = Number(load_default=_SAMPLING.top_p, validate=validate.Range(0.0, 1.0, min_inclusive=False))
    max_new_tokens = WholeNumber(load_default=None, allow_none=True, validate=validate.Range(min=1),
                                    metadata={"description": "default and upper bound: the server's --max-new-tokens "
                                                             "(2048 unless configured)"})
    seed = WholeNumber(load_default=None, allow_none=True, validate=validate.Range(0, 2**63 - 1))
    ras_win_len = WholeNumber(load_default=_SAMPLING.ras_win_len, allow_none=True, validate=validate.Range(0, MAX_RAS_WINDOW),
                                 metadata={"description": "RAS window length; 0 or null turns RAS off"})
    ras_win_max_num_repeat = WholeNumber(load_default=_SAMPLING.ras_win_max_num_repeat, validate=validate.Range(1, 1000))
    chunk_method = fields.String(load_default=_REQUEST.chunk_method, allow_none=True, validate=validate.OneOf(CHUNK_METHODS))
    chunk_max_word_num = WholeNumber(load_default=_REQUEST.chunk_max_word_num, validate=validate.Range(1, 10000))
    chunk_max_num_turns = WholeNumber(load_default=_REQUEST.chunk_max_num_turns, validate=validate.Range(1, 1000))
    generation_chunk_buffer_size = WholeNumber(load_default=_REQUEST.generation_chunk_buffer_size, allow_none=True, validate=validate.Range(0, 1000))
    runaway_guard = Flag(load_default=_SAMPLING.runaway_guard,
                         metadata={"description": "false: no runaway guard for this request (a generation that stops "
                                                  "speaking then runs on to max_new_tokens); see finish_reason"})


class GenerateFileSchema(GenerateSchema):
    """/generate and /generate-upload: the whole file, in the format asked for."""

    response_format = fields.String(load_default="wav", validate=validate.OneOf(FORMAT_NAMES),
                                    metadata={"description": "wav (default), mp3, opus (Ogg), aac (m4a), flac, "
                                                             "or pcm (raw 16-bit little-endian, 24 kHz mono)"})


class UploadFormSchema(GenerateFileSchema):
    """Multipart form fields of /generate-upload."""

    form = True

    ref_text = Text(load_default=None, allow_none=True, validate=validate.Length(max=5000),
                             metadata={"description": "transcript of the uploaded reference clip (optional)"})

    @ma.pre_load
    def _empty_means_default(self, data, **kwargs):
        # HTML forms send every input, unfilled ones as "": those mean "not given" (an empty scene stays empty).
        keep = ("text", "scene_prompt")
        return {k: v for k, v in dict(data).items() if k in keep or not (isinstance(v, str) and v.strip() == "")}


class UploadFilesSchema(ma.Schema):
    ref_audio_file = Upload(load_default=None,
                            metadata={"description": "reference clip: WAV, FLAC, OGG or MP3, any rate/channels"})


TASK_TYPES = ("CustomVoice", "VoiceDesign", "Base")
# Fields of vllm-omni's and sglang-omni's speech APIs with no meaning for Higgs Audio: refused by name, saying why.
# A value that asks for nothing (null, false, an empty list or object, repetition_penalty 1) passes.
NO_MEANING_HERE = {
    "x_vector_only_mode": "Higgs Audio has no speaker-embedding (x-vector) mode: it clones a voice from the "
                          "reference clip's audio in its prompt (send ref_audio and ref_text, task_type Base)",
    "speaker_embedding": "Higgs Audio takes no speaker embedding: clone a voice from ref_audio, or name one in voice",
    "word_timestamps": "this server has no forced aligner: audio comes without word timestamps",
    "non_streaming_mode": "this is a Qwen3-TTS prompt mode; Higgs Audio's prompt has no such mode",
    "repetition_penalty": "Higgs Audio samples with temperature, top_k, top_p and RAS (ras_win_len, "
                          "ras_win_max_num_repeat); it has no repetition penalty",
    "stage_params": "this server runs one model stage: its sampling fields are top level (temperature, top_k, ...)",
    "token_count": "Higgs Audio takes no duration target: max_new_tokens bounds the audio (25 frames a second)",
    "duration_tokens": "Higgs Audio takes no duration target: max_new_tokens bounds the audio (25 frames a second)",
    "extra_params": "this server passes nothing to the model unchecked: every field it takes is documented",
    "vq_codes": "send the clip's audio: this server encodes it with the model's own audio tokenizer",
}
_NEUTRAL = {"repetition_penalty": 1}


class NoMeaningHere(fields.Raw):
    """A field another server defines that means nothing here: refused (with why) unless it asks for nothing."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or value is False or value == {} or value == [] or (
                attr in _NEUTRAL and value == _NEUTRAL[attr] and not isinstance(value, bool)):
            return None
        raise ma.ValidationError(f"not supported: {NO_MEANING_HERE[attr]}")


class ReferenceSchema(ma.Schema):
    """sglang-omni's reference: one clip (in one of the audio keys) and its transcript."""

    audio_path = Text(load_default=None, allow_none=True)
    ref_audio = Text(load_default=None, allow_none=True)
    audio = Text(load_default=None, allow_none=True)
    data = Text(load_default=None, allow_none=True)
    media_type = Text(load_default=None, allow_none=True, validate=validate.Length(max=100),
                      metadata={"description": "not needed: the clip's format is read from its bytes"})
    text = Text(load_default=None, allow_none=True, validate=validate.Length(max=5000))
    vq_codes = NoMeaningHere(load_default=None, metadata={"description": "refused: send the clip's audio"})


class VoiceTaskFields(ma.Schema):
    """vllm-omni's and sglang-omni's speech fields, taken as their clients send them (/v1/audio/speech and realtime
    session.config); what each means for Higgs: app/serving/speaker.py and docs/realtime.md."""

    speaker = Text(load_default=None, allow_none=True, validate=validate.Length(max=600),
                   metadata={"description": "another name for voice (vllm-omni's and sglang-omni's)"})
    task_type = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(TASK_TYPES),
                              metadata={"description": "CustomVoice: the voice named in voice; VoiceDesign: the "
                                                       "voice described in instructions; Base: a clone of "
                                                       "ref_audio (default: Base with ref_audio, else CustomVoice)"})
    language = Text(load_default=None, allow_none=True, validate=validate.Length(max=64),
                    metadata={"description": "Auto or a language: accepted and unused, Higgs reads the language "
                                             "from the text"})
    ref_audio = Text(load_default=None, allow_none=True,
                     metadata={"description": "a clip to clone (task_type Base): a data: URI or base64 of a WAV, "
                                              "FLAC, OGG or MP3 file; an http(s) URL only where the operator allows "
                                              "fetching"})
    ref_text = Text(load_default=None, allow_none=True, validate=validate.Length(max=5000),
                    metadata={"description": "the transcript of ref_audio"})
    references = fields.List(fields.Nested(ReferenceSchema), load_default=None, allow_none=True,
                             validate=validate.Length(min=1, max=1, error="one reference: Higgs clones one voice here"),
                             metadata={"description": "sglang-omni's form of ref_audio + ref_text: "
                                                      "[{\"audio_path\": CLIP, \"text\": TRANSCRIPT}]"})
    initial_codec_chunk_frames = WholeNumber(load_default=None, allow_none=True, validate=validate.Range(min=0),
                                             metadata={"description": "frames (25 a second) in the first audio "
                                                                      "piece of a stream; 0: as many as the next"})
    x_vector_only_mode = NoMeaningHere(load_default=None)
    speaker_embedding = NoMeaningHere(load_default=None)
    word_timestamps = NoMeaningHere(load_default=None)
    non_streaming_mode = NoMeaningHere(load_default=None)
    repetition_penalty = NoMeaningHere(load_default=None)
    stage_params = NoMeaningHere(load_default=None)
    token_count = NoMeaningHere(load_default=None)
    duration_tokens = NoMeaningHere(load_default=None)
    extra_params = NoMeaningHere(load_default=None)


class SpeechSchema(VoiceTaskFields, GenerateSchema):
    """POST /v1/audio/speech: OpenAI's fields, plus the spec's sampling and chunking fields and vllm-omni's and
    sglang-omni's speech fields as extensions."""

    class Meta:
        exclude = ("text", "scene_prompt")

    model = Text(required=True, validate=validate.Length(min=1, max=200),
                          metadata={"description": "an id from GET /v1/models (tts-1, tts-1-hd and "
                                                   "gpt-4o-mini-tts are accepted as aliases)"})
    input = Text(required=True, validate=[validate.Length(min=1), _not_blank],
                 metadata={"description": "the text to speak"})
    voice = Text(load_default=None, allow_none=True, validate=validate.Length(max=600),
                          metadata={"description": "a voice from GET /v1/audio/voices (or {\"id\": NAME}), "
                                                   "profile:NAME, or omitted for a smart voice (OpenAI's built-in names mean smart voice)"})
    instructions = Text(load_default=None, allow_none=True, validate=validate.Length(max=4096),
                                 metadata={"description": "a scene description (or a scene name); with task_type "
                                                          "VoiceDesign, the voice's description"})
    response_format = fields.String(load_default="mp3", validate=validate.OneOf(FORMAT_NAMES))
    speed = Number(load_default=1.0, validate=validate.Range(0.25, 4.0),
                         metadata={"description": "tempo, pitch kept"})
    stream_format = fields.String(load_default="audio", validate=validate.OneOf(["audio", "sse"]),
                                  metadata={"description": "audio: the encoded file, sent as it is made; sse: "
                                                           "speech.audio.delta events, each a base64 piece of the "
                                                           "encoded stream in response_format (pcm unless given)"})
    stream = Flag(load_default=True,
                  metadata={"description": "false: the complete file once it is generated, with exact headers "
                                           "(total length in WAV and FLAC, mp3's LAME tag, aac in M4A), for tools "
                                           "that read whole files"})

    @ma.pre_load
    def _openai_shapes(self, data, **kwargs):
        if not isinstance(data, dict):
            return data
        voice = data.get("voice")
        if isinstance(voice, dict) and set(voice) == {"id"}:  # the SDK's custom-voice form: {"id": "NAME"}
            data = {**data, "voice": voice["id"]}
        if data.get("stream_format") == "sse" and "response_format" not in data:
            data = {**data, "response_format": "pcm"}
        return data

    @ma.validates_schema
    def _one_file_is_not_a_stream(self, data, **kwargs):
        if data.get("stream_format") == "sse" and data.get("stream") is False:
            raise ma.ValidationError("stream false asks for one complete file: use stream_format 'audio'", "stream")


class VoiceUploadFormSchema(ma.Schema):
    form = True

    name = Text(required=True, metadata={"description": "1-64 letters, digits, '_' or '-'"})
    transcript = Text(required=True, validate=[validate.Length(min=1, max=5000), _not_blank],
                               metadata={"description": "what the clip says (used for cloning)"})
    overwrite = Flag(load_default=False)


class VoiceUploadFilesSchema(ma.Schema):
    audio = Upload(required=True, metadata={"description": "WAV, FLAC, OGG or MP3; stored as 24 kHz mono WAV"})


class GenerateResponseSchema(ma.Schema):
    success = fields.Boolean()
    message = fields.String()
    audio_base64 = fields.String(metadata={"description": "the audio file in response_format (WAV unless asked "
                                                          "otherwise: 16-bit PCM, 24 kHz mono), base64"})
    response_format = fields.String()
    content_type = fields.String()
    sampling_rate = fields.Integer()
    duration = Number(metadata={"description": "seconds: samples / sampling_rate"})
    generated_text = fields.String()
    seed = fields.Integer(allow_none=True, metadata={"description": "the seed used (chosen by the server when the "
                                                                   "request gave none; null for greedy requests, "
                                                                   "which repeat without one): send it back to "
                                                                   "reproduce this audio"})
    finish_reason = fields.String(metadata={"description": "how the generation ended: stop (the model ended it), "
                                                           "length (max_new_tokens), runaway (the runaway guard "
                                                           "ended it: runaway_reason says why)"})
    runaway_reason = fields.String(allow_none=True, metadata={"description": "repetition, silence or text_budget "
                                                                             "when finish_reason is runaway, else "
                                                                             "null"})


class VoiceSchema(ma.Schema):
    name = fields.String()
    file = fields.String()
    type = fields.String()
    synthetic = fields.Boolean(metadata={"description": "true for a synthetic stand-in (the shipped espeak-ng "
                                                        "examples): cloning it gives a synthetic voice"})
    source = fields.String(metadata={"description": "where the clip comes from, when known"})


class VoicesSchema(ma.Schema):
    voices = fields.List(fields.Nested(VoiceSchema))
    count = fields.Integer()


class SceneSchema(ma.Schema):
    name = fields.String()
    content = fields.String()
    file = fields.String()


class ScenesSchema(ma.Schema):
    scenes = fields.List(fields.Nested(SceneSchema))
    count = fields.Integer()


class InfoSchema(ma.Schema):
    model_name = fields.String()
    audio_tokenizer = fields.String()
    device = fields.String()
    random_weights = fields.Boolean(metadata={"description": "true for a random-weight test checkpoint (make demo): "
                                                             "it speaks noise"})
    is_loaded = fields.Boolean()
    load_error = fields.String(allow_none=True)
    max_new_tokens = fields.Integer()
    runaway_guard = fields.Dict(metadata={"description": "the runaway guard's settings and figures "
                                                         "(docs/operations.md, Runaway guard)"})
    quantization = fields.String(metadata={"description": "--quantization: none, int8, fp8 or int4 (the bytes the "
                                                          "weights take: pool.weights, once loaded)"})
    supported_features = fields.List(fields.String())
    pool = fields.Dict()


def to_generation_request(args: dict, server_max_new_tokens: int, clip: ReferenceClip | None = None,
                          names: dict | None = None) -> GenerationRequest:
    top_k = args["top_k"] or None
    return GenerationRequest(
        text=args["text"],
        ref_audio=args["ref_audio"],
        ref_clip=clip,
        voice_description=args.get("voice_description"),
        scene_prompt=args["scene_prompt"],
        sampling=SamplingParams(
            temperature=args["temperature"],
            top_k=top_k,
            top_p=args["top_p"],
            seed=args["seed"],
            ras_win_len=args["ras_win_len"],
            ras_win_max_num_repeat=args["ras_win_max_num_repeat"],
            max_new_tokens=args["max_new_tokens"] or server_max_new_tokens,
            runaway_guard=args.get("runaway_guard", True),
            first_chunk_frames=args.get("initial_codec_chunk_frames"),
        ),
        chunk_method=args["chunk_method"],
        chunk_max_word_num=args["chunk_max_word_num"],
        chunk_max_num_turns=args["chunk_max_num_turns"],
        generation_chunk_buffer_size=args["generation_chunk_buffer_size"],
        names=names or {},
    )
