"""16-bit PCM on the wire. Streamed PCM and every encoded file (app/serving/encoder.py) use this one conversion, so the
joined stream equals /generate's WAV sample for sample."""

from __future__ import annotations

import base64

import numpy as np


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def pcm16_base64(samples: np.ndarray) -> str:
    return base64.b64encode(to_pcm16(samples).tobytes()).decode("ascii")
