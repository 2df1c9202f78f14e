"""The text-to-speech service the HTTP layer talks to: prepare (validate everything), then stream audio.

`prepare` does all the checking a request can fail, before any instance is taken or byte is sent. `stream`
borrows an instance for the whole request and yields audio pieces as frames complete; long-form chunks are
generated one after another with earlier chunks' codes fed back as context. `/generate` is the joined stream, so
streamed and one-shot audio are the same samples.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from .audio import to_model_rate
from .engine.stream_decoder import StreamDecoder
from .errors import Cancelled, InvalidRequest
from .pool import ModelPool
from .prompt.library import SceneLibrary, VoiceLibrary
from .prompt.planner import PromptPlan, PromptPlanner
from .request import SAMPLE_RATE, GenerationRequest, ReferenceClip, SamplingParams


@dataclass
class PreparedJob:
    plan: PromptPlan
    sampling: SamplingParams
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])


@dataclass
class AudioPiece:
    samples: np.ndarray  # float32 mono, 24 kHz
    generated_tokens: int  # decode steps so far in this chunk
    max_new_tokens: int
    chunk: int  # 0-based text chunk
    total_chunks: int


@dataclass
class GenerationStats:
    queue_wait_s: float = 0.0
    first_audio_s: float | None = None
    total_s: float = 0.0
    frames: int = 0
    samples: int = 0
    prompt_tokens: int = 0  # text and audio tokens of every chunk's prompt (usage reports)


class TTSService:
    def __init__(
        self,
        pool: Callable[[], ModelPool],
        voices: VoiceLibrary,
        scenes: SceneLibrary,
        max_new_tokens: int = 2048,
        acquire_timeout: float | None = 30.0,
        max_text_chars: int = 20000,
        max_speakers: int = 8,
    ):
        self._pool = pool  # a callable, so the pool can load in the background (it raises NotReady meanwhile)
        self.voices = voices
        self.scenes = scenes
        self.planner = PromptPlanner(voices, scenes, max_speakers=max_speakers)
        self.max_text_chars = max_text_chars
        self.max_new_tokens = max_new_tokens
        self.acquire_timeout = acquire_timeout

    def prepare(self, request: GenerationRequest) -> PreparedJob:
        sampling = request.sampling
        if len(request.text or "") > self.max_text_chars:
            raise InvalidRequest("text", f"text is {len(request.text)} characters; the limit is {self.max_text_chars}")
        if sampling.max_new_tokens > self.max_new_tokens:
            raise InvalidRequest(
                "max_new_tokens", f"max_new_tokens must be at most {self.max_new_tokens} (the server's maximum)"
            )
        if request.ref_clip is not None:
            clip = request.ref_clip
            samples = to_model_rate(clip.samples, clip.sample_rate)
            request = replace(request, ref_clip=ReferenceClip(samples, SAMPLE_RATE, clip.transcript))
        return PreparedJob(self.planner.plan(request), sampling)

    def admit(self) -> None:
        """Raise NotReady or PoolBusy now if a request could not be queued (before a stream's first byte)."""
        self._pool().admit()

    def stream(
        self,
        job: PreparedJob,
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
    ) -> Iterator[AudioPiece]:
        stats = stats if stats is not None else GenerationStats()
        start = time.perf_counter()
        plan, sampling = job.plan, job.sampling
        with self._pool().lend(self.acquire_timeout, cancel) as engine:
            stats.queue_wait_s = time.perf_counter() - start
            generated = []
            for index in range(len(plan.chunks)):
                prompt = engine.encode_prompt(plan.conversation(index, generated))
                stats.prompt_tokens += int(prompt.input_ids.shape[-1])
                chunk_params = sampling
                if sampling.seed is not None:  # each chunk its own, still reproducible, random stream
                    chunk_params = replace(sampling, seed=sampling.seed + index)
                decoder = StreamDecoder(engine.codec.decode)
                step_count = 0
                for step in engine.generate(prompt, chunk_params, cancel):
                    step_count = step.index + 1
                    if step.frame is None:
                        continue
                    samples = decoder.push(step.frame)
                    if samples is not None:
                        yield self._piece(samples, step_count, sampling, index, plan, stats, start)
                if cancel is not None and cancel.is_set():
                    raise Cancelled("generation cancelled")
                tail = decoder.flush()
                if tail is not None:
                    yield self._piece(tail, step_count, sampling, index, plan, stats, start)
                frames = decoder.frames
                stats.frames += frames.shape[0]
                generated.append(frames)
        stats.total_s = time.perf_counter() - start

    @staticmethod
    def _piece(samples, steps, sampling, index, plan, stats, start) -> AudioPiece:
        if stats.first_audio_s is None:
            stats.first_audio_s = time.perf_counter() - start
        stats.samples += samples.shape[0]
        return AudioPiece(samples, steps, sampling.max_new_tokens, index, len(plan.chunks))

    def generate(self, job: PreparedJob, stats: GenerationStats | None = None) -> np.ndarray:
        pieces = [piece.samples for piece in self.stream(job, stats=stats)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
