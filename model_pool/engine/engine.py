"""One preloaded model instance: its codec, its prompt encoder, and the batch loop that generates audio codes.

transformers' generate() streams only placeholder text ids, so we drive the model ourselves (runner.BatchRunner):
prefill the prompt, then feed each step's audio codes back. That gives us the codes as they are produced, a private
RNG per request, a cancel check between steps, and batching of concurrent requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import torch

from ..defaults import DEFAULT_MAX_CONTEXT_TOKENS, DEFAULT_PREFILL_CHUNK
from ..prompt.planner import AudioSource, Turn
from ..request import SamplingParams
from .codec import Codec
from .loader import LoadedModel
from .prompt_encoder import EncodedPrompt, PromptEncoder
from .runner import BatchRunner, Step
from .voice_cache import VoiceCache


class HiggsEngine:
    def __init__(self, loaded: LoadedModel, voice_cache: VoiceCache, name: str = "engine", max_batch_size: int = 8,
                 compile: bool = False, context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
                 prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK):
        self.model = loaded.model
        self.device = loaded.device
        self.name = name
        self.codec = Codec(loaded.processor, loaded.device)
        self.voice_cache = voice_cache
        self.prompts = PromptEncoder(loaded.processor, self.codes_for)
        config = self.model.config
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        self.bos_id = config.audio_stream_bos_id
        self.eos_id = config.audio_stream_eos_id
        self.runner = BatchRunner(self, max_batch_size, context_tokens, compile=compile, prefill_chunk=prefill_chunk)

    @property
    def context_tokens(self) -> int:
        return self.runner.context_tokens

    def codes_for(self, source: AudioSource) -> torch.Tensor:
        if source.codes is not None:
            return source.codes
        if source.path is not None:
            return self.voice_cache.get(source.path, self.codec.encode, source.voice)
        return self.codec.encode(source.samples)

    def encode_prompt(self, turns: list[Turn]) -> EncodedPrompt:
        return self.prompts.encode(turns)

    def generate(self, prompt: EncodedPrompt, params: SamplingParams,
                 cancel: threading.Event | None = None) -> Iterator[Step]:
        """Yield one Step per decode step until the stream ends, max_new_tokens, or cancel is set.

        The request joins this instance's running batch at the next step boundary."""
        return self.runner.submit(prompt, params, cancel)
