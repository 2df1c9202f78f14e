"""One preloaded model instance: its codec, its prompt encoder, and the batch loop that generates audio codes.

transformers' generate() streams only placeholder text ids, so we drive the model ourselves (runner.BatchRunner):
prefill the prompt, then feed each step's audio codes back. That gives us the codes as they are produced, a private
RNG per request, a cancel check between steps, and batching of concurrent requests.

Dependencies point one way: the engine builds its parts and hands each what it needs (the runner gets the model,
the code geometry and the device; the prompt encoder gets the reference coder); no part reads the engine back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..defaults import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_CONTEXT_TOKENS, DEFAULT_PREFILL_CHUNK
from ..prompt.planner import Turn
from ..request import SamplingParams
from .codec import Codec
from .geometry import CodeGeometry
from .loader import LoadedModel
from .prompt_encoder import EncodedPrompt, PromptEncoder
from .references import ReferenceCodes
from .runner import BatchRunner, Step
from .voice_cache import VoiceCache


class HiggsEngine:
    def __init__(self, loaded: LoadedModel, voice_cache: VoiceCache, name: str = "engine",
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, compile: bool = False,
                 context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS, prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK):
        self.model = loaded.model
        self.device = loaded.device
        self.name = name
        self.geometry = CodeGeometry.of(self.model.config)
        self.codec = Codec(loaded.processor, loaded.device)
        self.voice_cache = voice_cache
        self.codes_for = ReferenceCodes(self.codec, voice_cache)  # AudioSource -> codes [frames, codebooks]
        self.prompts = PromptEncoder(loaded.processor, self.codes_for)
        self.runner = BatchRunner(self.model, self.geometry, self.device, name, max_batch_size, context_tokens,
                                  compile=compile, prefill_chunk=prefill_chunk)

    @property
    def capacity(self) -> int:
        """Requests this instance decodes together (its batch slots)."""
        return self.runner.max_batch_size

    @property
    def context_tokens(self) -> int:
        return self.runner.context_tokens

    def encode_prompt(self, turns: list[Turn]) -> EncodedPrompt:
        return self.prompts.encode(turns)

    def generate(self, prompt: EncodedPrompt, params: SamplingParams,
                 cancel: threading.Event | None = None) -> Iterator[Step]:
        """Yield one Step per decode step until the stream ends, max_new_tokens, or cancel is set.

        The request joins this instance's running batch at the next step boundary."""
        return self.runner.submit(prompt, params, cancel)
