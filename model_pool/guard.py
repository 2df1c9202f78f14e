"""The runaway guard: a generation that has stopped speaking ends, says why, and costs no more decode steps.

Codec-token TTS models sometimes never emit the stream-end code and run on to max_new_tokens, the rest being silence
or a stuck repetition (boson-ai/higgs-audio issue 188; SesameAILabs/csm issue 122). A `RunawayGuard` watches one
chunk of one generation, fed in order with the chunk's complete frames and its decoded audio, and fires (its
`reason`) on the first of:

  repetition   the same frame (every codebook), or a cycle of up to MAX_CYCLE_FRAMES frames, repeating for
               `repetition_s` seconds;
  silence      decoded audio below `silence_db` (RMS of each 40 ms frame, dBFS) for `silence_s` seconds, counted
               only once speech began (a quiet start is not a runaway);
  text_budget  more audio than `text_budget` times what the chunk's text takes to say slowly, plus
               TEXT_BUDGET_BASE_S (per script: SECONDS_PER below).

It holds back the audio that a cut may remove (from where a repetition or a silence began, plus a natural tail),
and hands the rest out at once, so streaming is unchanged for speech; a pause shorter than the limit is handed out
when speech resumes. When it fires, the caller stops the generation (its slot is free before the next step) and
`finish()` hands out what is kept: up to where the stuck part began (silence keeps TAIL_S of it), faded out over
FADE_S so the cut does not click. Audio it never fires on is handed out unchanged, sample for sample.

It is pure (numpy; frames as anything with .tolist() or a sequence of ints): a frame is compared on the host, where
the engine already delivers it once per step, and audio is measured where it is decoded, so it adds no device
work and no host sync. It knows nothing of who calls it: model_pool/service.py drives it from the chunk loop.

Every answer says how a generation ended, in these words: finish_reason `stop` (the model ended it), `length`
(max_new_tokens) or `runaway` (this guard), with runaway_reason `repetition`, `silence` or `text_budget`.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

import numpy as np

from .defaults import (
    DEFAULT_RUNAWAY_REPETITION_S,
    DEFAULT_RUNAWAY_SILENCE_DB,
    DEFAULT_RUNAWAY_SILENCE_S,
    DEFAULT_RUNAWAY_TEXT_BUDGET,
)
from .request import FRAME_RATE, SAMPLE_RATE, SAMPLES_PER_FRAME

STOP, LENGTH, RUNAWAY = "stop", "length", "runaway"
REPETITION, SILENCE, TEXT_BUDGET = "repetition", "silence", "text_budget"
FINISH_REASONS = (STOP, LENGTH, RUNAWAY)
RUNAWAY_REASONS = (REPETITION, SILENCE, TEXT_BUDGET)

MAX_CYCLE_FRAMES = 8  # the longest repeating cycle looked for (0.32 s); each must repeat for repetition_s
TEXT_BUDGET_BASE_S = 5.0  # every chunk's budget starts with this (a greeting may come with pauses around it)
TAIL_S = 0.3  # of a cut silence, this much is kept: a natural end
FADE_S = 0.01  # the kept audio fades out over its last 10 ms

# What a text takes to say at a slow pace (the budget multiplies it). Slow English is about 100 words a minute, 8
# letters a second; a digit can take a whole word ("seven"); slow Mandarin is about 3 characters a second (4-5 is
# normal), Japanese 5 morae (kana), Korean 4 syllables. Punctuation adds a pause; a sound event ([laugh],
# [music start]) may last seconds; a [SPEAKERn] tag is a change of turn.
SECONDS_PER = {
    "letter": 0.125,
    "digit": 0.4,
    "cjk": 0.33,
    "kana": 0.2,
    "hangul": 0.25,
    "stop": 0.6,  # . ! ? ; : and their full-width forms
    "pause": 0.3,  # , - and their full-width forms
    "sound_event": 10.0,
    "speaker": 0.5,
}
_STOPS = set(".!?;:。！？；：")
_PAUSES = set(",-，、—")
_SOUND_EVENT = re.compile(r"<SE(?:_s|_e)?>\[[^\]<>]*\]</SE(?:_s|_e)?>|\[(?:laugh|music|humming|sing|applause|cheering"
                          r"|cough)(?: start| end)?\]", re.IGNORECASE)
_SPEAKER = re.compile(r"\[SPEAKER\d+\]")


def _char_class(ch: str) -> str | None:
    code = ord(ch)
    if 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3FFFF:
        return "cjk"
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9D:
        return "kana"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "hangul"
    if ch.isdigit():
        return "digit"
    if ch.isalpha():
        return "letter"
    if ch in _STOPS:
        return "stop"
    if ch in _PAUSES:
        return "pause"
    return None


def spoken_seconds(text: str) -> float:
    """What `text` takes to say at a slow pace (SECONDS_PER): the measure the text budget multiplies."""
    seconds = SECONDS_PER["sound_event"] * len(_SOUND_EVENT.findall(text))
    seconds += SECONDS_PER["speaker"] * len(_SPEAKER.findall(text))
    for ch in _SPEAKER.sub(" ", _SOUND_EVENT.sub(" ", text)):
        kind = _char_class(ch)
        if kind is not None:
            seconds += SECONDS_PER[kind]
    return seconds


def ended_by(steps: int, max_new_tokens: int) -> str:
    """How a generation the guard did not cut ended. The engine only says that it ended: at max_new_tokens steps that
    was the limit (`length`), before it the stream-end code (`stop`). The one place this is inferred."""
    return LENGTH if steps >= max_new_tokens else STOP


def record_finish(stats, finish_reason: str, runaway_reason: str | None = None) -> None:
    """A chunk ended: the request says its most telling end (runaway over length over stop; the first of equals), so
    a long-form answer with one cut chunk says so. `stats`: anything with finish_reason and runaway_reason."""
    rank = FINISH_REASONS.index
    if stats.finish_reason is None or rank(finish_reason) > rank(stats.finish_reason):
        stats.finish_reason, stats.runaway_reason = finish_reason, runaway_reason


def finish_fields(stats) -> dict:
    """How a generation ended, as every answer says it (JSON, SSE done events, realtime audio.done)."""
    return {"finish_reason": stats.finish_reason, "runaway_reason": stats.runaway_reason}


@dataclass(frozen=True)
class GuardSettings:
    """The operator's settings (app/settings.py, HIGGS_RUNAWAY_*); 0 turns a detector off."""

    enabled: bool = True
    repetition_s: float = DEFAULT_RUNAWAY_REPETITION_S
    silence_s: float = DEFAULT_RUNAWAY_SILENCE_S
    silence_db: float = DEFAULT_RUNAWAY_SILENCE_DB
    text_budget: float = DEFAULT_RUNAWAY_TEXT_BUDGET

    def __post_init__(self):
        for name in ("repetition_s", "silence_s", "text_budget"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"runaway_{name} must be 0 (off) or more, not {getattr(self, name)}")
        if not self.silence_db < 0:
            raise ValueError(f"runaway_silence_db must be below 0 dBFS, not {self.silence_db}")
        if self.repetition_s and round(self.repetition_s * FRAME_RATE) < 2:
            raise ValueError(f"runaway_repetition_s must be 0 (off) or at least {2 / FRAME_RATE} s (two frames)")

    def describe(self) -> dict:
        """The settings and the fixed figures, as /info shows them."""
        return {
            "enabled": self.enabled,
            "repetition_s": self.repetition_s,
            "max_cycle_frames": MAX_CYCLE_FRAMES,
            "silence_s": self.silence_s,
            "silence_db": self.silence_db,
            "text_budget": self.text_budget,
            "text_budget_base_s": TEXT_BUDGET_BASE_S,
            "seconds_per": dict(SECONDS_PER),
            "tail_s": TAIL_S,
        }


GUARD_OFF = GuardSettings(enabled=False)


def budget_frames(text: str, settings: GuardSettings) -> int | None:
    """The frames a chunk of `text` may last before the text budget ends it (None: no budget)."""
    if not settings.enabled or not settings.text_budget:
        return None
    return int((TEXT_BUDGET_BASE_S + settings.text_budget * spoken_seconds(text)) * FRAME_RATE)


class RunawayGuard:
    """One chunk's guard. Feed every complete frame to `frame()` and every decoded piece to `audio()` (which returns
    what may be sent now); stop generating once `reason` is set; end with `finish(last_piece)`, the rest to send.

    `min_frames`: nothing fires before this many frames (a request's min_new_tokens asks for at least that much)."""

    def __init__(self, settings: GuardSettings, text: str, min_frames: int = 0):
        self.settings = settings
        self.reason: str | None = None
        self.frames = 0
        self._min_frames = min_frames
        on = settings.enabled
        self._budget = budget_frames(text, settings)
        window = round(settings.repetition_s * FRAME_RATE) if on else 0
        self._window = window
        self._runs = {p: 0 for p in range(1, min(MAX_CYCLE_FRAMES, window // 2) + 1)} if window else {}
        self._recent: deque[tuple] = deque(maxlen=MAX_CYCLE_FRAMES)
        self._quiet_limit = round(settings.silence_s * FRAME_RATE) if on else 0
        self._level = 10 ** (settings.silence_db / 20)
        self._tail = round(TAIL_S * SAMPLE_RATE)
        self._fade = round(FADE_S * SAMPLE_RATE)
        # The chunk's audio, in samples from its start: received, handed out, measured (whole 40 ms frames).
        self._held: list[np.ndarray] = []
        self._received = self._released = self._measured = 0
        self._unmeasured = np.zeros(0, dtype=np.float32)  # the start of a 40 ms frame not yet whole
        self._spoke = False
        self._quiet_from: int | None = None  # where the silence after speech began
        self._quiet = 0  # its 40 ms frames so far
        self._cut: int | None = None  # where the kept audio ends, once the guard fired

    # ---- what it is fed ----------------------------------------------------------------------------------
    def frame(self, frame) -> str | None:
        """A complete frame [codebooks]; the reason when the guard has fired."""
        if self.reason is not None or not self.settings.enabled:
            return self.reason
        codes = tuple(frame.tolist() if hasattr(frame, "tolist") else frame)
        self.frames += 1
        for p in self._runs:
            same = len(self._recent) >= p and self._recent[-p] == codes
            self._runs[p] = self._runs[p] + 1 if same else 0
        self._recent.append(codes)
        for p, run in self._runs.items():
            if run >= self._window - p:  # `window` frames in a row, each the same as the one p before
                self._fire(REPETITION, (self.frames - run) * SAMPLES_PER_FRAME)  # keep the first cycle
                return self.reason
        if self._budget is not None and self.frames > self._budget:
            self._fire(TEXT_BUDGET, self._budget * SAMPLES_PER_FRAME)
        return self.reason

    def audio(self, samples: np.ndarray) -> np.ndarray:
        """A decoded piece (float32, in order); what may be sent now (empty while it may still be cut)."""
        if not self.settings.enabled:
            return samples
        self._take(samples)
        if self.reason is not None:
            return samples[:0]
        return self._release(self._hold_at())

    def finish(self, samples: np.ndarray | None = None) -> np.ndarray:
        """The chunk's last piece (the decoder's flush, or None); returns the rest to send: all of it, or, when the
        guard fired, what is kept, faded out."""
        if not self.settings.enabled:
            return samples if samples is not None else np.zeros(0, dtype=np.float32)
        if samples is not None:
            self._take(samples)
        self._measure(final=True)
        if self.reason is None:
            return self._release(self._received)
        kept = self._release(max(self._cut, self._released))
        fade = min(self._fade, kept.shape[0])
        if fade:
            kept = kept.copy()
            kept[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return kept

    def kept_frames(self, frames: int) -> int:
        """How many of the chunk's `frames` its kept audio covers: the context of a next chunk or sentence, which a
        stuck tail would teach to stay stuck."""
        if self.reason is None:
            return frames
        return min(frames, -(-max(self._cut, self._released) // SAMPLES_PER_FRAME))

    def finish_reason(self, steps: int, max_new_tokens: int) -> tuple[str, str | None]:
        """(finish_reason, runaway_reason) of the chunk, once it ended after `steps` decode steps."""
        if self.reason is not None:
            return RUNAWAY, self.reason
        return ended_by(steps, max_new_tokens), None

    # ---- inside --------------------------------------------------------------------------------------------
    def _fire(self, reason: str, cut: int) -> None:
        if self.frames < self._min_frames:
            return
        self.reason = reason
        self._cut = min(cut, self._suspect())

    def _suspect(self) -> int:
        """Where the audio may be cut if the guard fires: the start of a repeating stretch (after its first cycle),
        or a silence after speech plus its natural tail; the end of time when neither is under way."""
        at = self._received + (1 << 62)
        for run in self._runs.values():
            if run:
                at = min(at, (self.frames - run) * SAMPLES_PER_FRAME)
        if self._quiet_from is not None:
            at = min(at, self._quiet_from + self._tail)
        return at

    def _hold_at(self) -> int:
        return self._suspect() - self._fade  # the fade's samples stay too, so a cut can still fade them

    def _take(self, samples: np.ndarray) -> None:
        if samples.shape[0]:
            self._held.append(samples)
            self._received += samples.shape[0]
            self._measure(samples)

    def _release(self, upto: int) -> np.ndarray:
        """Hand out the held audio up to sample `upto` (from the chunk's start)."""
        count = min(upto, self._received) - self._released
        if count <= 0:
            return np.zeros(0, dtype=self._held[0].dtype if self._held else np.float32)
        held = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        out, rest = held[:count], held[count:]
        self._held = [rest] if rest.shape[0] else []
        self._released += count
        return out

    def _measure(self, samples: np.ndarray | None = None, final: bool = False) -> None:
        """The levels of the whole 40 ms frames received so far (at the end, the last partial one too)."""
        if not self._quiet_limit or self.reason is not None:
            return
        audio = self._unmeasured if samples is None else np.concatenate([self._unmeasured, samples])
        whole = audio.shape[0] // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
        self._unmeasured = audio[whole:] if not final else audio[:0]
        square = np.square(audio, dtype=np.float64)
        levels = np.sqrt(square[:whole].reshape(-1, SAMPLES_PER_FRAME).mean(axis=1)).tolist()
        sizes = [SAMPLES_PER_FRAME] * len(levels)
        if final and whole < audio.shape[0]:
            levels.append(float(np.sqrt(square[whole:].mean())))
            sizes.append(audio.shape[0] - whole)
        for rms, size in zip(levels, sizes):
            if rms >= self._level:
                self._spoke, self._quiet_from, self._quiet = True, None, 0
            elif self._spoke:
                if self._quiet_from is None:
                    self._quiet_from = self._measured
                self._quiet += 1
                if self._quiet >= self._quiet_limit:
                    self._fire(SILENCE, self._quiet_from + self._tail)
                    if self.reason is not None:
                        return
            self._measured += size
