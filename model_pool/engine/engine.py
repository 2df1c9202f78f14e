"""One preloaded model instance: render prompts to tensors and generate audio codes step by step.

transformers' generate() streams only placeholder text ids, so we drive the model ourselves (runner.BatchRunner):
prefill the prompt, then feed each step's audio codes back. That gives us the codes as they are produced, a private
RNG per request, a cancel check between steps, and batching of concurrent requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..defaults import DEFAULT_MAX_CONTEXT_TOKENS, DEFAULT_PREFILL_CHUNK
from ..prompt.planner import AudioSource
from ..request import SamplingParams
from .codec import Codec
from .loader import LoadedModel
from .runner import BatchRunner, Step
from .voice_cache import VoiceCache


@dataclass
class EncodedPrompt:
    input_ids: torch.Tensor  # [length], on the CPU
    audio_ids: torch.Tensor | None  # [audio tokens, codebooks], delay pattern applied
    text: str  # the rendered prompt, audio placeholders unexpanded (for logs and tests)
    audio_positions: list[int] | None = None  # audio placeholders before each token, [length + 1] (host side)

    def audio_before(self, position: int) -> int:
        """How many of the prompt's audio placeholders lie before token `position` (chunked prefill)."""
        return 0 if self.audio_positions is None else self.audio_positions[position]


class HiggsEngine:
    def __init__(self, loaded: LoadedModel, voice_cache: VoiceCache, name: str = "engine", max_batch_size: int = 8,
                 compile: bool = False, context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
                 prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK):
        self.model = loaded.model
        self.processor = loaded.processor
        self.device = loaded.device
        self.name = name
        self.codec = Codec(loaded.processor, loaded.device)
        self.voice_cache = voice_cache
        config = self.model.config
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        self.bos_id = config.audio_stream_bos_id
        self.eos_id = config.audio_stream_eos_id
        self.audio_token_ids = (config.audio_token_id, config.audio_delay_token_id)
        self.runner = BatchRunner(self, max_batch_size, context_tokens, compile=compile, prefill_chunk=prefill_chunk)

    # ---- prompt -------------------------------------------------------------------------------------------
    def codes_for(self, source: AudioSource) -> torch.Tensor:
        if source.codes is not None:
            return source.codes
        if source.path is not None:
            return self.voice_cache.get(source.path, self.codec.encode)
        return self.codec.encode(source.samples)

    def _delayed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [frames, codebooks] -> stream begin + codes + stream end, with the delay pattern: [frames+9, cb]."""
        seq = codes.transpose(0, 1).unsqueeze(0)
        bos = seq.new_full((1, self.num_codebooks, 1), self.bos_id)
        eos = seq.new_full((1, self.num_codebooks, 1), self.eos_id)
        return self.processor.build_delay_pattern(torch.cat([bos, seq, eos], dim=2))[0].transpose(0, 1)

    def render(self, messages: list[dict]) -> str:
        plain = [
            {
                "role": m["role"],
                "content": [{"type": i["type"], "text": i.get("text", "")} for i in m["content"]],
            }
            for m in messages
        ]
        return self.processor.tokenizer.apply_chat_template(
            plain, tokenize=False, add_generation_prompt=True, chat_template=self.processor.chat_template
        )

    def encode_prompt(self, messages: list[dict]) -> EncodedPrompt:
        sources = [i["source"] for m in messages for i in m["content"] if i["type"] == "audio"]
        delayed = [self._delayed(self.codes_for(s)) for s in sources]
        text = self.render(messages)
        pieces = text.split(self.processor.audio_token)
        if len(pieces) != len(delayed) + 1:
            raise RuntimeError(f"prompt has {len(pieces) - 1} audio placeholders for {len(delayed)} clips")
        expanded = pieces[0]
        for codes, piece in zip(delayed, pieces[1:]):
            expanded += self.processor.get_audio_tokens(codes.shape[0]) + piece
        ids = self.processor.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        audio = torch.cat(delayed, dim=0) if delayed else None
        placeholders = (ids == self.audio_token_ids[0]) | (ids == self.audio_token_ids[1])
        positions = [0, *placeholders.long().cumsum(0).tolist()]
        return EncodedPrompt(ids, audio, text, positions)

    # ---- generation ---------------------------------------------------------------------------------------
    def generate(
        self, prompt: EncodedPrompt, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Step]:
        """Yield one Step per decode step until the stream ends, max_new_tokens, or cancel is set.

        The request joins this instance's running batch at the next step boundary."""
        return self.runner.submit(prompt, params, cancel)
