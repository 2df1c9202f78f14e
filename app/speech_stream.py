"""Response bodies of POST /v1/audio/speech: the encoded audio as it is made, or OpenAI's SSE events.

Both run on streaming.watched_stream (generation in a helper thread, disconnect checks, outcome log and metrics).
Audio bodies cannot carry an error once the first byte is out: a failure aborts the transfer (StreamAborted)
so the client never takes a cut-short file for a whole one. SSE bodies end with an error event instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import closing

from model_pool.service import GenerationStats

from .encoder import StreamEncoder
from .errors import StreamAborted, public_message
from .streaming import COMPLETE, Failure, watched_stream


def _items(service, job, ping_interval, stats, client_gone, on_finish):
    return closing(watched_stream(service, job, ping_interval, stats, client_gone, on_finish, label="speech"))


def audio_body(service, job, encoder: StreamEncoder, ping_interval: float,
               client_gone: Callable[[], bool] | None = None, on_finish: Callable | None = None) -> Iterator[bytes]:
    stats = GenerationStats()
    with _items(service, job, ping_interval, stats, client_gone, on_finish) as items:
        for item in items:
            if item is None:
                continue  # no keep-alive exists inside an audio file; nginx's read timeout covers the wait
            if isinstance(item, Failure):
                raise StreamAborted(f"speech {job.request_id}: generation failed after the response started")
            data = encoder.finish() if item is COMPLETE else encoder.push(item.samples)
            if data:  # an empty chunk would end a chunked response
                yield data


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_body(service, job, encoder: StreamEncoder, ping_interval: float,
             client_gone: Callable[[], bool] | None = None, on_finish: Callable | None = None) -> Iterator[str]:
    stats = GenerationStats()
    with _items(service, job, ping_interval, stats, client_gone, on_finish) as items:
        for item in items:
            if item is None:
                yield ": ping\n\n"
            elif isinstance(item, Failure):
                yield _event({"type": "error", "error": {"message": public_message(item.error),
                                                         "type": "server_error", "request_id": job.request_id}})
                return
            elif item is COMPLETE:
                tail = encoder.finish()
                if tail:
                    yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode("ascii")})
                yield _event({"type": "speech.audio.done", "usage": {
                    "input_tokens": stats.prompt_tokens, "output_tokens": stats.frames,
                    "total_tokens": stats.prompt_tokens + stats.frames}})
            else:
                data = encoder.push(item.samples)
                if data:
                    yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
