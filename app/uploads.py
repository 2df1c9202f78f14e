"""Uploaded reference clips: a size limit while reading, then model_pool.audio's bounded decoding (never written
to disk under a client's name)."""

from __future__ import annotations

from model_pool.audio import decode_clip
from model_pool.errors import InvalidAudio
from model_pool.request import ReferenceClip

from .errors import PayloadTooLarge

FIELD = "ref_audio_file"


def read_upload(storage, max_bytes: int, max_seconds: float, transcript: str | None = None,
                field: str = FIELD) -> ReferenceClip | None:
    """A werkzeug FileStorage (or None) -> ReferenceClip: mono samples at 24 kHz."""
    if storage is None:
        return None
    data = storage.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(field, f"{field} is larger than the {max_bytes // (1024 * 1024)} MB limit")
    if not data:
        raise InvalidAudio(field, f"{field} is empty")
    return ReferenceClip(decode_clip(data, field, max_seconds), (transcript or "").strip() or None)
