"""Higgs Audio v2 engine and thread-safe model pool. Knows torch and transformers; never imports Flask."""

from .errors import (
    Cancelled,
    HiggsError,
    InvalidAudio,
    InvalidRequest,
    ModelLoadError,
    NotReady,
    PoolBusy,
    UnknownScene,
    UnknownVoice,
)
from .request import SAMPLE_RATE, GenerationRequest, ReferenceClip, SamplingParams

__all__ = [
    "SAMPLE_RATE",
    "Cancelled",
    "GenerationRequest",
    "HiggsError",
    "InvalidAudio",
    "InvalidRequest",
    "ModelLoadError",
    "NotReady",
    "PoolBusy",
    "ReferenceClip",
    "SamplingParams",
    "UnknownScene",
    "UnknownVoice",
]
