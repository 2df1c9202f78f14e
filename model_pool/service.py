"""The text-to-speech service the HTTP layer talks to: prepare (validate everything), then start a generation.

`prepare` does all the checking a request can fail, before any instance is taken or byte is sent: the plan (names,
limits), the per-request budget, then, with the model loaded, the reference clips encoded once and every chunk's
prompt measured against the context. `start` admits the prepared job and returns its handle (model_pool/lifecycle.py),
which every endpoint iterates; `abort(request_id)` and `shutdown()` stop handles from outside. `stream` is what a
handle runs: it borrows an instance for the whole request and yields audio pieces as frames complete; long-form
chunks are generated one after another with earlier chunks' codes fed back as context (the oldest dropped, and
logged, when a prompt would outgrow the context). `/generate` is the joined stream, so streamed and one-shot audio
are the same samples.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from .defaults import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_REQUEST_STEPS,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_QUEUE_TIMEOUT,
    MAX_SPEAKERS,
    MIN_TEMPERATURE,
)
from .engine.prompt_encoder import EncodedPrompt
from .engine.stream_decoder import StreamDecoder
from .errors import Cancelled, ContextTooLong, InvalidRequest, NotReady
from .guard import GUARD_OFF, GuardSettings, RunawayGuard, record_finish
from .lifecycle import AudioPiece, Generation, GenerationStats, Observer, collect
from .pool import ModelPool, Reservation
from .pool_loader import PoolLoader
from .prompt import text as textprep
from .prompt.library import SceneLibrary, VoiceLibrary
from .prompt.planner import PromptPlan, PromptPlanner
from .request import GenerationRequest, SamplingParams

log = logging.getLogger(__name__)

__all__ = ["AudioPiece", "GenerationStats", "PreparedJob", "TTSService"]


@dataclass
class PreparedJob:
    plan: PromptPlan  # reference clips already encoded
    sampling: SamplingParams
    request_id: str
    text: str  # the text as submitted
    first_prompt: EncodedPrompt | None = None  # chunk 0's prompt, encoded (and measured) by prepare()

    @property
    def seed(self) -> int | None:
        """The seed the generation uses (chosen by prepare() when the client gave none); None when greedy."""
        return self.sampling.seed


@dataclass
class Context:
    """What a chunk is generated with: the plan (its chunks' text) and the codes of the chunks generated so far,
    of which the oldest `dropped` no longer fit the context."""

    plan: PromptPlan
    generated: list
    dropped: int = 0


@dataclass
class History:
    """The sentences a session has spoken, with their codes: shared by the configs that keep one voice."""

    context: Context


@dataclass
class Conversation:
    """A realtime session under one config: the plan it made (voice, scene), its sampling, and the history of the
    sentences spoken so far (chunks of one long-form generation, in order). `continuing` another conversation of
    the same voice shares its history, so sentences still queued under the old config add to the same one."""

    history: History
    sampling: SamplingParams
    request_id: str

    @property
    def context(self) -> Context:
        return self.history.context

    @property
    def sentences(self) -> list[str]:
        return list(self.context.plan.chunks)

    def continuing(self, earlier: Conversation) -> Conversation:
        return Conversation(earlier.history, self.sampling, self.request_id)

    def said(self, sentence: str, frames, dropped: int) -> None:
        plan = self.context.plan
        self.history.context = Context(replace(plan, chunks=[*plan.chunks, sentence]),
                                       [*self.context.generated, frames], dropped)


CONFIG_PROBE = "Hello."  # a session's config is checked with this text; its sentences come later


def with_seed(sampling: SamplingParams) -> SamplingParams:
    """A sampled request without a seed gets one now, so the seed it used can be reported and the take reproduced.
    Below 2**32, so a browser's JavaScript (53-bit integers) keeps it exact. Greedy requests keep none: they repeat
    without one (their RAS redraws use a fixed seed)."""
    if sampling.seed is not None or sampling.temperature < MIN_TEMPERATURE:
        return sampling
    return replace(sampling, seed=secrets.randbits(32))


def fits(prompt: EncodedPrompt, sampling: SamplingParams, context_tokens: int) -> bool:
    """Whether a prompt and its max_new_tokens fit one row's context."""
    return int(prompt.input_ids.shape[0]) + sampling.max_new_tokens <= context_tokens


class TTSService:
    def __init__(
        self,
        loader: PoolLoader,
        voices: VoiceLibrary,
        scenes: SceneLibrary,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        acquire_timeout: float | None = DEFAULT_QUEUE_TIMEOUT,
        max_speakers: int = MAX_SPEAKERS,
        max_request_steps: int = DEFAULT_MAX_REQUEST_STEPS,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        device: str = "auto",
        guard: GuardSettings = GuardSettings(),  # noqa: B008 - frozen
    ):
        self.device = device
        self.guard = guard  # the runaway guard's settings; a request may turn it off (SamplingParams.runaway_guard)
        self.loader = loader
        self.planner = PromptPlanner(voices, scenes, max_speakers=max_speakers)
        self.max_new_tokens = max_new_tokens
        self.max_request_steps = max_request_steps
        self.max_text_chars = max_text_chars
        self.acquire_timeout = acquire_timeout
        self._live: dict[int, Generation] = {}  # handles not yet ended (abort, shutdown)
        self._live_lock = threading.Condition()
        self._stopping = False
        # A graceful stop began (SIGTERM): generations in flight finish, and realtime sessions close as soon as
        # they have nothing left to say instead of holding the worker until their idle timeout.
        self.draining = threading.Event()

    def prepare(self, request: GenerationRequest, request_id: str = "-") -> PreparedJob:
        sampling, name = request.sampling, request.name
        if len(request.text) > self.max_text_chars:
            raise InvalidRequest(name("text"), f"{name('text')} is {len(request.text)} characters; the limit is "
                                               f"{self.max_text_chars}")
        if sampling.max_new_tokens > self.max_new_tokens:
            raise InvalidRequest(
                "max_new_tokens", f"max_new_tokens must be at most {self.max_new_tokens} (the server's maximum)"
            )
        plan = self.planner.plan(request)
        steps = len(plan.chunks) * sampling.max_new_tokens
        if steps > self.max_request_steps:
            raise InvalidRequest(
                "max_new_tokens",
                f"the text makes {len(plan.chunks)} chunk(s) of up to {sampling.max_new_tokens} decode steps each: "
                f"{steps} steps exceed the per-request budget of {self.max_request_steps}; lower max_new_tokens "
                "(per chunk) or send less text")
        engine = self.pool().engines[0]  # NotReady (503) while loading; every instance encodes alike
        codebook_size = engine.geometry.codebook_size
        if sampling.top_k is not None and sampling.top_k > codebook_size:
            raise InvalidRequest("top_k", f"top_k must be at most {codebook_size} (the model's codes per codebook)")
        sources = plan.sources()
        plan = plan.with_codes({i: engine.codes_for(source) for i, source in enumerate(sources)})
        prompts = [engine.encode_prompt(plan.conversation(i, [], dropped=i)) for i in range(len(plan.chunks))]
        for prompt in prompts:  # each chunk with no earlier chunk in its context must fit: the one check
            if not fits(prompt, sampling, engine.context_tokens):
                raise ContextTooLong(int(prompt.input_ids.shape[0]), sampling.max_new_tokens, engine.context_tokens,
                                     name("text"))
        return PreparedJob(plan, with_seed(sampling), request_id, request.text, prompts[0])

    def pool(self) -> ModelPool:
        """The loaded pool, or NotReady (503) while it loads or after it failed."""
        return self.loader.pool()

    def status(self) -> dict:
        """The engine's state for health checks and /info: state, load_error, pool (stats), devices (those in use,
        or before a load, what the --device spec means on this machine)."""
        status = self.loader.status()
        if not status["devices"]:
            from .engine.loader import device_names  # torch, on the model side of the line

            status["devices"] = device_names(self.device)
        return status

    def admit(self) -> Reservation:
        """A place in the pool now, or NotReady / PoolBusy (before a response's first byte)."""
        if self._stopping:
            raise NotReady("the server is shutting down")
        return self.pool().admit()

    # ---- generation handles ------------------------------------------------------------------------------
    def start(self, job: PreparedJob, on_finish: Observer | None = None, label: str = "generate",
              stats: GenerationStats | None = None) -> Generation:
        """Admit a prepared job (PoolBusy / NotReady now, before any byte is sent) and return its handle: iterate
        handle.events(); it ends exactly once, however the request ends."""
        reservation = self.admit()
        return self._track(Generation(job.request_id,
                                      lambda cancel, stats: self.stream(job, cancel, stats, reservation),
                                      reservation, on_finish, label, on_release=self._forget, stats=stats))

    def _track(self, handle: Generation) -> Generation:
        """A new handle, live until it ends (abort and shutdown find it here; it forgets itself on release)."""
        with self._live_lock:
            self._live[id(handle)] = handle
        return handle

    def _forget(self, handle: Generation) -> None:
        with self._live_lock:
            self._live.pop(id(handle), None)
            self._live_lock.notify_all()

    def live(self) -> list[Generation]:
        with self._live_lock:
            return list(self._live.values())

    def abort(self, request_id: str) -> bool:
        """Stop the generations of `request_id` within a decode step; whether there was one."""
        found = [h for h in self.live() if h.request_id == request_id]
        for handle in found:
            handle.abort("cancelled")
        return bool(found)

    def shutdown(self, wait: float = 2.0) -> list[Generation]:
        """The server is stopping: admit nothing more, stop every live generation (each consumer is told), and wait
        up to `wait` seconds for their consumers to end them. Returns those still live after that."""
        self._stopping = True
        for handle in self.live():
            handle.abort("shutdown", NotReady("the server is shutting down: the generation was stopped"))
        with self._live_lock:  # consumers are other threads (gunicorn's); each ends its handle within a tick
            self._live_lock.wait_for(lambda: not self._live, timeout=wait)
            return list(self._live.values())

    def stream(self, job: PreparedJob, cancel: threading.Event | None = None, stats: GenerationStats | None = None,
               reservation: Reservation | None = None) -> Iterator[AudioPiece]:
        stats = stats if stats is not None else GenerationStats()
        start = time.perf_counter()
        plan = job.plan
        with self.pool().lend(self.acquire_timeout, cancel, reservation) as engine:
            stats.queue_wait_s = time.perf_counter() - start
            context = Context(plan, [])
            for index in range(len(plan.chunks)):
                first = job.first_prompt if index == 0 else None  # chunk 0's prompt: prepare() encoded it already
                frames = yield from self._chunk(engine, context, index, job, cancel, stats, start, first)
                context.generated.append(frames)

    def _chunk(self, engine, context: Context, index: int, job, cancel: threading.Event | None,
               stats: GenerationStats, start: float, prompt: EncodedPrompt | None = None):
        """Generate chunk `index` of `context` with the earlier chunks' codes in its prompt (the oldest dropped, for
        good, while it would not fit); yield its audio pieces, return its frames. Raises Cancelled if cancelled."""
        sampling, plan = job.sampling, context.plan
        if prompt is None:
            prompt = engine.encode_prompt(plan.conversation(index, context.generated, context.dropped))
        # With every earlier chunk dropped this is the prompt prepare() measured, which fits.
        while context.dropped < index and not fits(prompt, sampling, engine.context_tokens):
            context.dropped += 1
            prompt = engine.encode_prompt(plan.conversation(index, context.generated, context.dropped))
            log.info("request %s chunk %d: dropped the oldest generated chunk from the context (%d so far) to fit "
                     "the %d-token context", job.request_id, index, context.dropped, engine.context_tokens)
        stats.prompt_tokens += int(prompt.input_ids.shape[0])
        decoder = StreamDecoder(engine.codec.decode, engine.geometry.num_codebooks)
        if sampling.first_chunk_frames is not None:  # the client's first piece (0: as large as the next one)
            decoder.first_chunk = sampling.first_chunk_frames or decoder.chunk
        # The runaway guard sees every frame and every decoded piece, and holds back what a cut may remove.
        guard = RunawayGuard(self.guard if sampling.runaway_guard else GUARD_OFF, plan.chunks[index],
                             sampling.min_new_tokens)
        step_count = 0
        with contextlib.closing(engine.generate(prompt, sampling, cancel)) as steps:  # closed: the slot is free now
            for step in steps:  # every chunk the same seed, as upstream
                step_count = step.index + 1
                if step.frame is None:
                    continue
                if guard.frame(step.frame):
                    break
                samples = decoder.push(step.frame)
                if samples is not None:
                    samples = guard.audio(samples)
                    if samples.size:
                        yield self._piece(samples, step_count, sampling, index, len(plan.chunks), stats, start)
                    if guard.reason:
                        break
        if cancel is not None and cancel.is_set():
            raise Cancelled("generation cancelled")
        tail = guard.finish(decoder.flush())
        if tail.size:
            yield self._piece(tail, step_count, sampling, index, len(plan.chunks), stats, start)
        record_finish(stats, *guard.finish_reason(step_count, sampling.max_new_tokens))
        frames = decoder.frames
        stats.frames += frames.shape[0]
        return frames[:guard.kept_frames(frames.shape[0])]

    @staticmethod
    def _piece(samples, steps, sampling, index, total, stats, start) -> AudioPiece:
        if stats.first_audio_s is None:
            stats.first_audio_s = time.perf_counter() - start
        stats.samples += samples.shape[0]
        return AudioPiece(samples, steps, sampling.max_new_tokens, index, total)

    # ---- realtime sessions: sentences one after another, each with the earlier ones in its context ----------
    def prepare_conversation(self, request: GenerationRequest, request_id: str = "-") -> Conversation:
        """A session's voice, scene and sampling checked and its reference clips encoded once: every sentence of
        the session is then a chunk of one long-form generation that grows as text arrives."""
        job = self.prepare(replace(request, text=CONFIG_PROBE, chunk_method=None), request_id)
        return Conversation(History(Context(replace(job.plan, chunks=[]), [])), job.sampling, request_id)

    def start_sentence(self, conversation: Conversation, text: str, on_finish: Observer | None = None,
                       label: str = "realtime", wait: float | None = None) -> Generation:
        """A handle for the next sentence of `conversation`: admitted (waiting up to `wait` seconds, the queue
        timeout by default), generated with every earlier sentence it can hold in its context, and added to the
        context only once it is complete (a cancelled sentence was not heard, so it is no history)."""
        sentence = textprep.normalize(text)
        if len(sentence) > self.max_text_chars:
            raise InvalidRequest("text", f"the sentence is {len(sentence)} characters; the limit is "
                                         f"{self.max_text_chars}")
        engine = self.pool().engines[0]
        alone = Context(replace(conversation.context.plan, chunks=[sentence]), [])
        prompt = engine.encode_prompt(alone.plan.conversation(0, [], 0))
        if not fits(prompt, conversation.sampling, engine.context_tokens):
            raise ContextTooLong(int(prompt.input_ids.shape[0]), conversation.sampling.max_new_tokens,
                                 engine.context_tokens)
        if self._stopping:
            raise NotReady("the server is shutting down")
        reservation = self.pool().admit(self.acquire_timeout if wait is None else wait)

        def produce(cancel, stats):
            start = time.perf_counter()
            with self.pool().lend(self.acquire_timeout, cancel, reservation) as lent:
                stats.queue_wait_s = time.perf_counter() - start
                context = conversation.context
                index = len(context.plan.chunks)
                trial = Context(replace(context.plan, chunks=[*context.plan.chunks, sentence]), context.generated,
                                context.dropped)
                frames = yield from self._chunk(lent, trial, index, conversation, cancel, stats, start)
                conversation.said(sentence, frames, trial.dropped)

        return self._track(Generation(conversation.request_id, produce, reservation, on_finish, label,
                                      on_release=self._forget))

    def generate(self, job: PreparedJob, stats: GenerationStats | None = None) -> np.ndarray:
        """The whole audio of a job, through a handle like every endpoint (tests, benchmarks)."""
        with self.start(job, stats=stats) as handle:
            return collect(handle.events())
