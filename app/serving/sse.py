"""Server-Sent Events: one formatter, and the two event streams built on it.

/generate-stream sends named events (start, audio..., done or error); /v1/audio/speech with stream_format sse
sends OpenAI's unnamed `data:` events (speech.audio.delta..., speech.audio.done or an error object). Both send a
`: ping` comment while nothing else is due, so proxies keep the connection open.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from model_pool.guard import finish_fields
from model_pool.lifecycle import Event, GenerationStats
from model_pool.request import SAMPLE_RATE

from ..errors import public_message
from .encoder import StreamEncoder
from .pcm import pcm16_base64

PING = ": ping\n\n"


def sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def spec_events(job, events: Iterator[Event], stats: GenerationStats) -> Iterator[str]:
    """/generate-stream's events: start, audio..., then done or error."""
    yield sse({"type": "start", "sampling_rate": SAMPLE_RATE, "format": "pcm_s16le", "channels": 1,
               "request_id": job.request_id}, "start")
    index = 0
    for event in events:
        if event.kind == "ping":
            yield PING
        elif event.kind == "audio":
            piece = event.piece
            yield sse({"type": "audio", "index": index, "audio_base64": pcm16_base64(piece.samples),
                       "samples": int(piece.samples.shape[0]),
                       "progress": {"generated_tokens": piece.generated_tokens, "max_new_tokens": piece.max_new_tokens,
                                    "chunk": piece.chunk, "total_chunks": piece.total_chunks}}, "audio")
            index += 1
        elif event.kind == "done":
            yield sse({"type": "done", "success": True, "duration": stats.samples / SAMPLE_RATE,
                       "sampling_rate": SAMPLE_RATE, "generated_text": job.text, "seed": job.seed,
                       **finish_fields(stats)}, "done")
        else:
            yield sse({"type": "error", "message": public_message(event.error), "request_id": job.request_id},
                      "error")


def speech_events(job, events: Iterator[Event], stats: GenerationStats, encoder: StreamEncoder) -> Iterator[str]:
    """/v1/audio/speech with stream_format sse: speech.audio.delta (base64 PCM), then speech.audio.done."""

    def delta(data: bytes) -> str:
        return sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})

    for event in events:
        if event.kind == "ping":
            yield PING
        elif event.kind == "audio":
            data = encoder.push(event.piece.samples)
            if data:
                yield delta(data)
        elif event.kind == "done":
            tail = encoder.finish()
            if tail:
                yield delta(tail)
            yield sse({"type": "speech.audio.done", "usage": {
                "input_tokens": stats.prompt_tokens, "output_tokens": stats.frames,
                "total_tokens": stats.prompt_tokens + stats.frames}, **finish_fields(stats)})
        else:
            yield sse({"type": "error", "error": {"message": public_message(event.error), "type": "server_error",
                                                  "request_id": job.request_id}})
