"""/v1/audio/speech with `stream: false` (vllm-omni's name for it): the complete file, with exact headers.

A streamed file's header goes out before its length is known (WAV: sizes 0xFFFFFFFF; FLAC: 0 total samples), which
some readers refuse (soundfile's sf.read of a FLAC) or misreport (Python's wave counts 2147483647 frames). Here the
speech is generated as the stream would carry it, as 16-bit PCM with the speed already applied, and encoded once
by encode_file, as /generate's files are. Nothing is sent before the file is whole, so every failure until then is
a JSON error with its status.
"""

from __future__ import annotations

import numpy as np
from flask import Response

from model_pool.errors import HiggsError

from ..errors import StreamAborted
from .encoder import encode_file
from .speech import speech as serve_speech


def complete_file(args: dict) -> Response:
    streamed = serve_speech({**args, "response_format": "pcm"})
    try:
        pcm = b"".join(streamed.response)
    except StreamAborted as exc:  # failed after the PCM started: nothing of ours is out yet, so answer properly
        if isinstance(exc.__cause__, HiggsError):
            raise exc.__cause__ from None
        raise
    finally:
        streamed.close()  # ends the generation handle
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32767.0  # to_pcm16 gives back the same samples
    audio, mimetype = encode_file(samples, args["response_format"])
    return Response(audio, mimetype=mimetype)
