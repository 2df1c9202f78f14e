"""Reference audio to codes for prompts: codes given as they are, voice files through the shared voice cache
(encoded once while the file is unchanged), uploaded clips encoded by the codec."""

from __future__ import annotations

import torch

from ..prompt.planner import AudioSource
from .codec import Codec
from .voice_cache import VoiceCache


class ReferenceCodes:
    def __init__(self, codec: Codec, voice_cache: VoiceCache):
        self.codec = codec
        self.voice_cache = voice_cache

    def __call__(self, source: AudioSource) -> torch.Tensor:
        if source.codes is not None:
            return source.codes
        if source.path is not None:
            return self.voice_cache.get(source.path, self.codec.encode, source.voice)
        return self.codec.encode(source.samples)
