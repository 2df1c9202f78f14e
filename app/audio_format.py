"""Audio on the wire: 16-bit PCM and WAV. Streamed PCM and /generate's WAV use the same conversion, so the
joined stream equals the one-shot file sample for sample."""

from __future__ import annotations

import base64
import io

import numpy as np
import soundfile as sf

from model_pool.request import SAMPLE_RATE


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def pcm16_base64(samples: np.ndarray) -> str:
    return base64.b64encode(to_pcm16(samples).tobytes()).decode("ascii")


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, to_pcm16(samples), sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def wav_base64(samples: np.ndarray) -> str:
    return base64.b64encode(wav_bytes(samples)).decode("ascii")
