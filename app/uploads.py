"""Uploaded reference clips: size and duration limits, decoded in memory (never written under a client's name)."""

from __future__ import annotations

from model_pool.audio import read_audio
from model_pool.errors import InvalidAudio
from model_pool.request import ReferenceClip

from .errors import PayloadTooLarge

FIELD = "ref_audio_file"


def read_upload(storage, max_bytes: int, max_seconds: float, transcript: str | None,
                field: str = FIELD) -> ReferenceClip | None:
    """A werkzeug FileStorage (or None) -> ReferenceClip at the file's own rate; resampling is the engine's job."""
    if storage is None or (not storage.filename and not storage.content_length and storage.stream is None):
        return None
    data = storage.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(field, f"{field} is larger than the {max_bytes // (1024 * 1024)} MB limit")
    if not data:
        raise InvalidAudio(field, f"{field} is empty")
    samples, rate = read_audio(data, field)
    seconds = samples.shape[0] / rate
    if seconds > max_seconds:
        raise InvalidAudio(field, f"{field} is {seconds:.1f}s long; the limit is {max_seconds:g}s")
    transcript = (transcript or "").strip() or None
    return ReferenceClip(samples, rate, transcript)
