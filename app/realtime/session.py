"""One realtime session: messages in on the connection's thread, sentences spoken one after another on a second.

The receiving thread parses each message, cuts the utterance's text into sentences as they complete
(model_pool/sentences.py) and queues them; the speaking thread takes them in order, starts each as a generation of
the session's conversation (TTSService.start_sentence: the earlier sentences are its context, so the voice stays)
and sends audio.start, the audio (one complete file in the session's format, or PCM chunks as they are made) and
audio.done. A session holds a pool place only while a sentence is being generated.

A session ends clearly: a first message that is not a valid session.config gets its error and then a close frame
(1008; 1013 when the server cannot serve now), a message over its limit a close with 1009, session.close a close
with 1000 once what is queued has been spoken.

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

from model_pool.errors import HiggsError, UnknownVoice
from model_pool.guard import finish_fields
from model_pool.lifecycle import Generation, Watch
from model_pool.request import SAMPLE_RATE
from model_pool.sentences import SentenceSplitter
from model_pool.service import Conversation, TTSService

from .. import metrics
from ..serving.encoder import StreamEncoder
from ..serving.voices import voice_hint
from .protocol import (
    CHANNELS,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    ProtocolError,
    SessionOptions,
    close_code,
    config_request,
    event,
    parse,
)
from .websocket import ConnectionClosed

DRAIN_TICK_S = 1.0  # how often an idle session looks whether the server began a graceful stop

log = logging.getLogger("higgs.realtime")


@dataclass
class Sentence:
    conversation: Conversation
    options: SessionOptions  # the config it was queued under: its format and speed
    text: str
    utterance: int
    index: int
    completed: float  # when the message that completed it arrived (first-audio latency is measured from it)


@dataclass
class UtteranceEnd:
    utterance: int
    total: int


_STOP = object()
_DRAINED = object()  # session.close: everything queued before it has been spoken


@dataclass
class Limits:
    idle_timeout: float  # seconds without a client message while nothing is being spoken
    max_text_chars: int  # text per utterance
    max_request_steps: int  # decode steps per utterance (sentences x max_new_tokens)
    queue_timeout: float  # how long a sentence waits for a pool place
    ping_interval: float
    max_message_bytes: int  # one message other than session.config (the WebSocket bounds a session.config)


class RealtimeSession:
    def __init__(self, ws, service: TTSService, request_id: str, limits: Limits, max_new_tokens: int):
        self.ws = ws
        self.service = service
        self.request_id = request_id
        self.limits = limits
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()  # every send, the epoch and the running generation
        self.epoch = 0
        self.current: Generation | None = None
        self.speaking: int | None = None  # the utterance whose sentence is being generated
        self.queue: queue.Queue = queue.Queue()
        self.conversation: Conversation | None = None
        self.options: SessionOptions | None = None  # the last valid config's; its identity: a change starts a new context
        self.splitter = SentenceSplitter()
        self.drained = threading.Event()
        self.utterance = 0  # the utterance being received
        self.chars = 0  # its text so far
        self.sentences = 0  # its sentences so far
        self.closed = False
        self.speaker = threading.Thread(target=self._speak_loop, name=f"realtime-{request_id}", daemon=True)

    # ---- the receiving side (the connection's thread) -------------------------------------------------
    def run(self) -> None:
        self.speaker.start()
        tick = min(self.limits.idle_timeout, DRAIN_TICK_S)
        heard = time.monotonic()
        try:
            while not self.closed:
                raw = self.ws.receive(timeout=tick)
                if raw is None:
                    if self._busy():
                        heard = time.monotonic()  # the client listens while we speak: not idle
                        continue
                    if self.service.draining.is_set():  # the server is stopping and nothing is left to say
                        self.ws.close(CLOSE_GOING_AWAY, "the server is stopping")
                        break
                    if time.monotonic() - heard < self.limits.idle_timeout:
                        continue
                    self._send(event("error", message=f"no message for {self.limits.idle_timeout:g}s: closing the "
                                                      "idle session", field=None))
                    self.ws.close(1000, "idle timeout")
                    break
                heard = time.monotonic()
                try:
                    if not self._handle(parse(raw, self.limits.max_message_bytes)):
                        break
                except (ProtocolError, HiggsError) as exc:
                    close = exc.close if isinstance(exc, ProtocolError) else None
                    if close != CLOSE_TOO_BIG:  # as the WebSocket's own refusal: the close frame alone says why
                        self._send(event("error", message=exc.message, field=getattr(exc, "field", None)))
                    if close is None and self.conversation is None:  # no valid config yet: nothing to go on with
                        close = close_code(exc)
                    if close is not None:
                        self._close(close, exc.message)
                        break
        except ConnectionClosed:
            pass
        finally:
            self._stop()

    def _handle(self, message: dict) -> bool:
        kind = message["type"]
        if kind == "session.close":
            self._close_after_queued()
            return False
        if kind == "session.config":
            self._configure(message)
            return True
        if self.conversation is None:
            raise ProtocolError(f"{kind} before session.config: a session starts with its session.config", "type")
        if kind == "input.cancel":
            self._cancel()
            return True
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
        try:
            request, options = config_request(message, self.max_new_tokens)
            conversation = self.service.prepare_conversation(request, self.request_id)
        except UnknownVoice as exc:
            raise voice_hint(exc) from None
        if self.conversation is not None and options.identity == self.options.identity:
            conversation = conversation.continuing(self.conversation)  # the same voice: the conversation goes on
        self.conversation, self.options = conversation, options
        self.splitter = SentenceSplitter(granularity=options.split_granularity)

    def _queue_sentence(self, text: str) -> None:
        steps = (self.sentences + 1) * self.conversation.sampling.max_new_tokens
        if steps > self.limits.max_request_steps:
            raise ProtocolError(f"the utterance's sentences would take {steps} decode steps, over the budget of "
                                f"{self.limits.max_request_steps}: send input.done, or lower max_new_tokens",
                                "max_new_tokens")
        sentence = Sentence(self.conversation, self.options, text, self.utterance, self.sentences,
                            time.perf_counter())
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

    def _close_after_queued(self) -> None:
        """session.close: what is queued is spoken (text without input.done is dropped), then the close frame. Until
        then nothing more is read; a client that goes away meanwhile stops it all, as always."""
        if self.conversation is not None:
            self.queue.put((self.epoch, _DRAINED))
            while not self.drained.wait(1.0) and self.ws.connected:
                pass
        self._close(CLOSE_NORMAL, "session closed")

    def _close(self, code: int, reason: str) -> None:
        """A close frame with `code` and the reason (cut to the 123 bytes a close frame holds)."""
        reason = reason.encode("utf-8")[:120].decode("utf-8", "ignore")
        with self.lock:
            try:
                self.ws.close(code, reason)
            except ConnectionClosed:
                pass
            self.closed = True

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
            if item is _DRAINED:
                self.drained.set()
                continue
            if epoch != self.epoch or self.closed:
                continue  # queued before a cancel, or the client is gone
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
        fmt, total = sentence.options.response_format, 0
        # PCM goes out as it is made (raw chunks join into the same bytes, so a client asking for whole files gets
        # them too); any other format as one complete file per sentence, with exact headers, so it plays as written.
        encoder = StreamEncoder(fmt, sentence.options.speed, seekable=fmt != "pcm")

        def send_audio(data: bytes) -> bool:
            nonlocal total
            if not data:
                return True
            if not self._send_if(epoch, data):
                return False
            if total == 0:
                metrics.REALTIME_FIRST_AUDIO.observe(time.perf_counter() - sentence.completed)
            total += len(data)
            return True

        try:
            self._send_if(epoch, event("audio.start", **ids, sentence_text=sentence.text, format=fmt,
                                       sample_rate=SAMPLE_RATE, channels=CHANNELS,
                                       seed=sentence.conversation.sampling.seed))
            for item in handle.events(Watch(ping_interval=self.limits.ping_interval)):
                if item.kind == "audio":
                    if not send_audio(encoder.push(item.piece.samples)):
                        break
                elif item.kind == "done":
                    if send_audio(encoder.finish()):
                        self._send_if(epoch, event("audio.done", **ids, total_bytes=total, error=False,
                                                   **finish_fields(handle.stats)))
                elif item.kind == "error":
                    error = item.error
                    message = error.message if isinstance(error, HiggsError) else "internal server error"
                    self._send_if(epoch, event("error", message=message, field=getattr(error, "field", None),
                                               **ids))
                    self._send_if(epoch, event("audio.done", **ids, total_bytes=total, error=True))
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
