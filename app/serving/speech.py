"""Serving of /v1/audio/speech: OpenAI's fields (and vllm-omni's and sglang-omni's task_type, ref_audio, ...: who
speaks is app/serving/speaker.py's) mapped onto a generation request, and the encoded audio as it is made (or
OpenAI's SSE events).

An audio body cannot carry an error once its first byte is out, so `primed_audio` pulls the generation up to its
first encoded bytes before the response starts: any failure until then (a full queue, a prompt that fails) is a
JSON error with its status. After that a failure aborts the transfer (StreamAborted: no final chunk), so the client
never takes a cut-short file for a whole one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from flask import Response

from model_pool.defaults import DEFAULT_MODEL
from model_pool.errors import Cancelled, UnknownVoice
from model_pool.lifecycle import Event, collect

from ..errors import StreamAborted, UnknownModel
from ..runtime import runtime
from .encoder import StreamEncoder
from .jobs import start_job
from .responses import client_watch, finish_headers, seed_header, stream_response
from .speaker import resolve_speaker
from .sse import speech_events
from .voices import voice_hint

log = logging.getLogger("higgs.openai")


def _encoded(events: Iterator[Event], encoder: StreamEncoder) -> Iterator[bytes]:
    for event in events:
        if event.kind == "audio":
            data = encoder.push(event.piece.samples)
        elif event.kind == "done":
            tail = encoder.finish()
            if tail:
                yield tail
            return
        elif event.kind == "error":
            raise event.error
        else:
            continue  # no keep-alive exists inside an audio file; the proxy's read timeout covers the wait
        if data:  # an empty chunk would end a chunked response
            yield data
    raise Cancelled("client went away")


def primed_audio(events: Iterator[Event], encoder: StreamEncoder, request_id: str) -> Iterator[bytes]:
    """The audio body, its first bytes already made (errors until then raise here, before the response)."""
    chunks = _encoded(events, encoder)
    first = next(chunks, b"")

    def body():
        try:
            if first:
                yield first
            yield from chunks
        except Cancelled:
            return
        except Exception as exc:  # after the first byte: abort the transfer
            raise StreamAborted(f"speech {request_id}: generation failed after the response started") from exc
        finally:
            chunks.close()

    return body()


# ---- /v1/audio/speech ------------------------------------------------------------------------------------------
MODEL_ID = "higgs-audio-v2"
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# Our generation fields under the names a /v1 client sends them: errors name the field the client knows.
SPEECH_NAMES = {"text": "input", "ref_audio": "voice", "scene_prompt": "instructions",
                "voice_description": "instructions"}


def model_ids(model_path: str) -> list[str]:
    """The ids `model` accepts besides OpenAI's aliases: ours, and the checkpoint's hub id, or, for a local
    directory, the hub id it stands in for and the directory's name (never the path itself in a listing)."""
    if Path(model_path).exists():
        return [MODEL_ID, DEFAULT_MODEL, Path(model_path.rstrip("/\\")).name]
    return [MODEL_ID, model_path]


def check_model(name: str) -> None:
    """`model` as /v1/audio/speech and realtime sessions take it: our ids, OpenAI's aliases, or --model-path."""
    path = runtime().settings.model_path
    ids = model_ids(path)
    if name not in (*ids, *OPENAI_MODEL_ALIASES, path):
        raise UnknownModel(name, ids)


def speech(args: dict) -> Response:
    check_model(args["model"])
    # `stream: false` (vllm-omni's extension): the complete file with exact headers, made like /generate's.
    encoder = StreamEncoder(args["response_format"], args["speed"], seekable=not args["stream"])
    try:
        who = resolve_speaker(args)
        fields = {**args, "text": args["input"], "ref_audio": who.ref_audio, "scene_prompt": who.scene_prompt,
                  "voice_description": who.voice_description}
        job, handle = start_job(fields, "/v1/audio/speech", "speech", clip=who.clip, names=SPEECH_NAMES)
    except UnknownVoice as exc:
        raise voice_hint(exc) from None
    events = handle.events(client_watch())
    if not args["stream"]:
        encoder.push(collect(events))  # every failure until the file is whole is a JSON error with its status
        return Response(encoder.finish(), mimetype=encoder.mime,
                        headers={"X-Request-ID": job.request_id, **seed_header(job.seed),
                                 **finish_headers(handle.stats)})
    if args["stream_format"] == "sse":
        return stream_response(speech_events(job, events, handle.stats, encoder), "text/event-stream", handle,
                               job.seed)
    try:
        body = primed_audio(events, encoder, job.request_id)
    except BaseException:
        handle.close()  # failed before the first byte: the handle ends here, with what the events reached
        raise
    return stream_response(body, encoder.mime, handle, job.seed)
