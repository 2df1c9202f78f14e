"""Waveform helpers: read files, down-mix, resample to the model's 24 kHz."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import InvalidAudio
from .request import SAMPLE_RATE


def to_model_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 24 kHz. `samples` is [n] or [n, channels]."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        samples = AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), sample_rate, SAMPLE_RATE).numpy()
    return np.ascontiguousarray(samples, dtype=np.float32)


def read_audio(source, field: str = "ref_audio_file") -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG/MP3 from a path or bytes into ([n, channels] float32, sample_rate)."""
    try:
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                             dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports unknown formats as RuntimeError / LibsndfileError
        raise InvalidAudio(field, f"{field} is not a readable audio file (WAV, FLAC, OGG or MP3): {exc}") from exc
    if data.shape[0] == 0:
        raise InvalidAudio(field, f"{field} contains no audio samples")
    return data, rate


def load_voice_file(path: str) -> np.ndarray:
    data, rate = read_audio(path, field="ref_audio")
    return to_model_rate(data, rate)
