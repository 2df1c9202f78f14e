"""One realtime session: messages in on the connection's thread, sentences spoken one after another on a second.

The receiving thread parses each message, cuts the utterance's text into sentences as they complete
(model_pool/sentences.py) and queues them; the speaking thread takes them in order, starts each as a generation of
the session's conversation (TTSService.start_sentence: the earlier sentences are its context, so the voice stays)
and sends audio.start, the PCM frames and audio.done. A session holds a pool place only while a sentence is being
generated.

Barge-in: every send happens under one lock and only if its utterance epoch is still current. input.cancel bumps the
epoch under that lock, aborts the running generation (it stops within a decode step) and sends `cancelled` in the
same critical section, so nothing of the cancelled utterances can follow it; queued sentences of an old epoch are
skipped. Closing the socket stops everything the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from model_pool.errors import HiggsError
from model_pool.lifecycle import Generation, Watch
from model_pool.request import SAMPLE_RATE
from model_pool.sentences import SentenceSplitter
from model_pool.service import Conversation, TTSService

from .. import metrics
from ..serving.pcm import to_pcm16
from .protocol import ProtocolError, config_request, event, parse
from .websocket import ConnectionClosed

log = logging.getLogger("higgs.realtime")


@dataclass
class Sentence:
    conversation: Conversation
    text: str
    utterance: int
    index: int
    completed: float  # when the message that completed it arrived (first-audio latency is measured from it)


@dataclass
class UtteranceEnd:
    utterance: int
    total: int


_STOP = object()


@dataclass
class Limits:
    idle_timeout: float  # seconds without a client message while nothing is being spoken
    max_text_chars: int  # text per utterance
    max_request_steps: int  # decode steps per utterance (sentences x max_new_tokens)
    queue_timeout: float  # how long a sentence waits for a pool place
    ping_interval: float


class RealtimeSession:
    def __init__(self, ws, service: TTSService, request_id: str, limits: Limits, resolve_voice,
                 max_new_tokens: int):
        self.ws = ws
        self.service = service
        self.request_id = request_id
        self.limits = limits
        self.resolve_voice = resolve_voice
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()  # every send, the epoch and the running generation
        self.epoch = 0
        self.current: Generation | None = None
        self.speaking: int | None = None  # the utterance whose sentence is being generated
        self.queue: queue.Queue = queue.Queue()
        self.conversation: Conversation | None = None
        self.voice_key: tuple | None = None  # (voice, instructions): a change starts a new context
        self.splitter = SentenceSplitter()
        self.utterance = 0  # the utterance being received
        self.chars = 0  # its text so far
        self.sentences = 0  # its sentences so far
        self.closed = False
        self.speaker = threading.Thread(target=self._speak_loop, name=f"realtime-{request_id}", daemon=True)

    # ---- the receiving side (the connection's thread) -------------------------------------------------
    def run(self) -> None:
        self.speaker.start()
        try:
            while not self.closed:
                raw = self.ws.receive(timeout=self.limits.idle_timeout)
                if raw is None:
                    if self._busy():
                        continue  # the client listens while we speak: not idle
                    self._send(event("error", message=f"no message for {self.limits.idle_timeout:g}s: closing the "
                                                      "idle session", field=None))
                    self.ws.close(1000, "idle timeout")
                    break
                try:
                    if not self._handle(parse(raw)):
                        break
                except ProtocolError as exc:
                    self._send(event("error", message=exc.message, field=exc.field))
                except HiggsError as exc:
                    self._send(event("error", message=exc.message, field=getattr(exc, "field", None)))
        except ConnectionClosed:
            pass
        finally:
            self._stop()

    def _handle(self, message: dict) -> bool:
        kind = message["type"]
        if kind == "session.close":
            return False
        if kind == "input.cancel":
            self._cancel()
            return True
        if kind == "session.config":
            self._configure(message)
            return True
        if self.conversation is None:
            raise ProtocolError(f"{kind} before session.config: configure the session first", "type")
        if kind == "input.text":
            text = message["text"]
            if self.chars + len(text) > self.limits.max_text_chars:
                raise ProtocolError(f"the utterance would exceed {self.limits.max_text_chars} characters: send "
                                    "input.done to speak what is buffered first", "text")
            self.chars += len(text)
            for sentence in self.splitter.feed(text):
                self._queue_sentence(sentence)
        else:  # input.done
            for sentence in self.splitter.flush():
                self._queue_sentence(sentence)
            self.queue.put((self.epoch, UtteranceEnd(self.utterance, self.sentences)))
            self._next_utterance()
        return True

    def _configure(self, message: dict) -> None:
        if self.chars:
            raise ProtocolError("session.config while text is buffered: send input.done (or input.cancel) first",
                                "type")
        request = config_request(message, self.resolve_voice, self.max_new_tokens)
        conversation = self.service.prepare_conversation(request, self.request_id)
        key = (request.ref_audio, request.scene_prompt)
        if self.conversation is not None and key == self.voice_key:
            conversation = conversation.continuing(self.conversation)  # the same voice: the conversation goes on
        self.conversation, self.voice_key = conversation, key

    def _queue_sentence(self, text: str) -> None:
        steps = (self.sentences + 1) * self.conversation.sampling.max_new_tokens
        if steps > self.limits.max_request_steps:
            raise ProtocolError(f"the utterance's sentences would take {steps} decode steps, over the budget of "
                                f"{self.limits.max_request_steps}: send input.done, or lower max_new_tokens",
                                "max_new_tokens")
        sentence = Sentence(self.conversation, text, self.utterance, self.sentences, time.perf_counter())
        self.sentences += 1
        self.queue.put((self.epoch, sentence))

    def _next_utterance(self) -> None:
        self.utterance += 1
        self.chars = self.sentences = 0
        self.splitter.clear()

    def _cancel(self) -> None:
        with self.lock:
            cancelled = self.speaking if self.speaking is not None else self.utterance
            self.epoch += 1
            if self.current is not None:
                self.current.abort("cancelled")
            self._send_locked(event("cancelled", utterance_index=cancelled))
        metrics.REALTIME_CANCELS.inc()
        log.info("realtime %s: cancelled at utterance %d", self.request_id, cancelled)
        self._next_utterance()

    def _busy(self) -> bool:
        return self.current is not None or not self.queue.empty()

    def _stop(self) -> None:
        with self.lock:
            self.closed = True
            self.epoch += 1
            if self.current is not None:
                self.current.abort("cancelled")
        self.queue.put((self.epoch, _STOP))
        self.speaker.join(10)
        try:
            self.ws.close()
        except ConnectionClosed:
            pass

    # ---- the speaking side ----------------------------------------------------------------------------
    def _speak_loop(self) -> None:
        while True:
            epoch, item = self.queue.get()
            if item is _STOP:
                return
            if epoch != self.epoch:
                continue  # queued before a cancel
            if isinstance(item, UtteranceEnd):
                self._send_if(epoch, event("session.done", utterance_index=item.utterance,
                                           total_sentences=item.total))
                continue
            try:
                self._speak(epoch, item)
            except Exception:  # noqa: BLE001 - a bug while speaking: say so, keep the session
                log.exception("realtime %s: speaking failed", self.request_id)
                self._send_if(epoch, event("error", message="internal server error", field=None))

    def _speak(self, epoch: int, sentence: Sentence) -> None:
        try:
            handle = self.service.start_sentence(sentence.conversation, sentence.text, self._observe,
                                                 wait=self.limits.queue_timeout)
        except HiggsError as exc:
            self._send_if(epoch, event("error", message=exc.message, field=getattr(exc, "field", None)))
            return
        with self.lock:
            if epoch != self.epoch:
                handle.close()
                return
            self.current, self.speaking = handle, sentence.utterance
        ids = {"utterance_index": sentence.utterance, "sentence_index": sentence.index}
        try:
            self._send_if(epoch, event("audio.start", **ids, sentence_text=sentence.text, format="pcm",
                                       sample_rate=SAMPLE_RATE, seed=sentence.conversation.sampling.seed))
            total, first = 0, True
            for item in handle.events(Watch(ping_interval=self.limits.ping_interval)):
                if item.kind == "audio":
                    data = to_pcm16(item.piece.samples).tobytes()
                    if not self._send_if(epoch, data):
                        break
                    if first:
                        metrics.REALTIME_FIRST_AUDIO.observe(time.perf_counter() - sentence.completed)
                        first = False
                    total += len(data)
                elif item.kind == "done":
                    self._send_if(epoch, event("audio.done", **ids, total_bytes=total))
                elif item.kind == "error":
                    error = item.error
                    message = error.message if isinstance(error, HiggsError) else "internal server error"
                    self._send_if(epoch, event("error", message=message, field=getattr(error, "field", None),
                                               **ids))
        finally:
            with self.lock:
                self.current = self.speaking = None
            handle.close()

    @staticmethod
    def _observe(outcome: str, stats, elapsed: float) -> None:
        metrics.observe_generation("/v1/audio/speech/stream", outcome, stats, elapsed, sample_rate=SAMPLE_RATE)

    # ---- sending --------------------------------------------------------------------------------------
    def _send_if(self, epoch: int, payload) -> bool:
        """Send unless a cancel (or the end) came since `epoch`; whether it went out."""
        with self.lock:
            if epoch != self.epoch:
                return False
            return self._send_locked(payload)

    def _send(self, payload) -> bool:
        with self.lock:
            return self._send_locked(payload)

    def _send_locked(self, payload) -> bool:
        try:
            self.ws.send(payload)
            return True
        except (ConnectionClosed, OSError):
            self.closed = True
            return False
