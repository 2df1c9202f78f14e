"""The runaway guard on its own (model_pool/guard.py): frames and audio in, a reason and the kept audio out. No model:
whoever drives it (the chunk loop today) is tested through the API in tests/api/test_runaway.py."""

from __future__ import annotations

import numpy as np
import pytest

from model_pool.guard import (
    FADE_S,
    GUARD_OFF,
    LENGTH,
    RUNAWAY,
    STOP,
    TAIL_S,
    GuardSettings,
    RunawayGuard,
    budget_frames,
    ended_by,
    record_finish,
    spoken_seconds,
)
from model_pool.lifecycle import GenerationStats
from model_pool.request import SAMPLE_RATE, SAMPLES_PER_FRAME

ON = GuardSettings()
RNG = np.random.default_rng(0)
TEXT = "A sentence long enough that its text budget is never what ends these tests, whatever they feed. " * 3


def noise_frames(count: int, rng=RNG) -> list[np.ndarray]:
    return list(rng.integers(0, 1024, size=(count, 8)))


def speech(frames: int, level: float = 0.1, rng=RNG) -> np.ndarray:
    return (level * rng.standard_normal(frames * SAMPLES_PER_FRAME)).astype(np.float32)


def silence(frames: int, level: float = 0.0) -> np.ndarray:
    return np.full(frames * SAMPLES_PER_FRAME, level, dtype=np.float32)


def drive(guard: RunawayGuard, frames, audio: np.ndarray, piece: int = 7) -> tuple[np.ndarray, int]:
    """Feed frames and audio as a chunk loop does: a piece of `piece` frames' audio whenever the decoder has 10 frames
    of right context for it, the rest at the end. The audio sent, and the frames generated until the guard fired."""
    sent, fed, decoded = [], 0, 0
    for frame in frames:
        if guard.frame(frame):
            break
        fed += 1
        if fed - 10 - decoded >= piece:
            sent.append(guard.audio(audio[decoded * SAMPLES_PER_FRAME:(decoded + piece) * SAMPLES_PER_FRAME]))
            decoded += piece
            if guard.reason:
                break
    sent.append(guard.finish(audio[decoded * SAMPLES_PER_FRAME:fed * SAMPLES_PER_FRAME]))
    return np.concatenate(sent), fed


# ---- nothing to cut: the audio is handed out unchanged ------------------------------------------------------
@pytest.mark.parametrize("piece", [1, 3, 7, 80])
def test_speech_noise_and_pauses_pass_unchanged_sample_for_sample(piece):
    frames = noise_frames(400)
    audio = np.concatenate([speech(100), silence(60), speech(100), silence(70, 1e-4), speech(70)])  # 2.4 and 2.8 s
    guard = RunawayGuard(ON, TEXT)
    out, fed = drive(guard, frames, audio, piece)
    assert guard.reason is None and fed == 400
    assert np.array_equal(out, audio[:400 * SAMPLES_PER_FRAME])


def test_a_quiet_start_is_not_silence():
    guard = RunawayGuard(ON, TEXT)
    audio = np.concatenate([silence(200), speech(50)])
    out, _ = drive(guard, noise_frames(250), audio)
    assert guard.reason is None and np.array_equal(out, audio)


def test_a_pause_is_held_until_speech_resumes():
    guard = RunawayGuard(ON, TEXT)
    assert guard.audio(speech(10)).shape[0] == 10 * SAMPLES_PER_FRAME
    pause = guard.audio(silence(40))
    assert pause.shape[0] == round(TAIL_S * SAMPLE_RATE) - round(FADE_S * SAMPLE_RATE)  # the tail goes out, no more
    after = guard.audio(speech(5))
    assert pause.shape[0] + after.shape[0] == 45 * SAMPLES_PER_FRAME  # the pause, then the speech


def test_off_passes_everything():
    frames = [np.zeros(8, dtype=np.int64)] * 300
    guard = RunawayGuard(GUARD_OFF, "Hi.")
    audio = np.concatenate([speech(10), silence(290)])
    out, fed = drive(guard, frames, audio)
    assert guard.reason is None and fed == 300 and np.array_equal(out, audio)
    assert guard.finish_reason(300, 300) == (LENGTH, None)


# ---- repetition -----------------------------------------------------------------------------------------------
def test_the_same_frame_for_a_second_ends_it_keeping_one():
    stuck = noise_frames(1)[0]
    frames = noise_frames(50) + [stuck] * 200
    guard = RunawayGuard(ON, TEXT)
    out, fed = drive(guard, frames, speech(250))
    assert guard.reason == "repetition"
    assert fed == 50 + 24  # the 25th identical frame fires
    assert out.shape[0] == 51 * SAMPLES_PER_FRAME  # up to the stuck frame's first copy
    assert out[-1] == 0.0 and guard.finish_reason(fed + 8, 400) == (RUNAWAY, "repetition")


@pytest.mark.parametrize("period", [2, 3, 5, 8])
def test_a_short_cycle_repeating_ends_it(period):
    cycle = noise_frames(period)
    frames = noise_frames(40) + cycle * 60
    guard = RunawayGuard(ON, TEXT)
    out, fed = drive(guard, frames, speech(len(frames)))
    assert guard.reason == "repetition" and fed == 40 + 24
    assert out.shape[0] == (40 + period) * SAMPLES_PER_FRAME  # one cycle kept


def test_a_longer_cycle_is_not_a_repetition():
    frames = noise_frames(40) + noise_frames(12) * 20
    guard = RunawayGuard(ON, TEXT)
    drive(guard, frames, speech(len(frames)))
    assert guard.reason is None


def test_the_repetition_setting_changes_the_window():
    stuck = noise_frames(1)[0]
    guard = RunawayGuard(GuardSettings(repetition_s=2.0), TEXT)
    _, fed = drive(guard, noise_frames(10) + [stuck] * 100, speech(110))
    assert guard.reason == "repetition" and fed == 10 + 49
    off = RunawayGuard(GuardSettings(repetition_s=0), TEXT)
    drive(off, noise_frames(10) + [stuck] * 100, speech(110))
    assert off.reason is None


# ---- silence ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [0.0, 1e-4])  # digital silence and near-silence (-80 dBFS)
def test_silence_after_speech_ends_it_with_a_natural_tail(level):
    audio = np.concatenate([speech(40), silence(400, level)])
    guard = RunawayGuard(ON, TEXT)
    out, fed = drive(guard, noise_frames(440), audio, piece=10)
    assert guard.reason == "silence"
    assert fed < 40 + 75 + 30  # 3 s of silence, then the decoder's lag and one piece
    tail = round(TAIL_S * SAMPLE_RATE)
    assert out.shape[0] == 40 * SAMPLES_PER_FRAME + tail
    assert np.array_equal(out[:40 * SAMPLES_PER_FRAME], audio[:40 * SAMPLES_PER_FRAME])


def test_silence_settings():
    audio = np.concatenate([speech(40), silence(400, 0.002)])  # -54 dBFS
    longer = RunawayGuard(GuardSettings(silence_s=5.0), TEXT)
    _, fed = drive(longer, noise_frames(440), audio, piece=1)
    assert longer.reason == "silence" and fed == 40 + 125 + 10
    louder_level = RunawayGuard(GuardSettings(silence_db=-60.0), TEXT)
    drive(louder_level, noise_frames(440), audio)
    assert louder_level.reason is None


def test_the_flush_is_judged_like_any_piece():
    guard = RunawayGuard(ON, TEXT)
    assert guard.audio(speech(10)).shape[0] == 10 * SAMPLES_PER_FRAME
    rest = guard.finish(silence(100))
    assert guard.reason == "silence" and rest.shape[0] == round(TAIL_S * SAMPLE_RATE)


# ---- the text budget ----------------------------------------------------------------------------------------------
def test_the_budget_per_script():
    assert spoken_seconds("Hello.") == pytest.approx(5 * 0.125 + 0.6)
    assert spoken_seconds("你好。") == pytest.approx(2 * 0.33 + 0.6)
    assert spoken_seconds("1999") == pytest.approx(1.6)
    assert spoken_seconds("[SPEAKER0] Hi <SE>[Laughter]</SE>") == pytest.approx(0.5 + 0.25 + 10)
    assert spoken_seconds("こんにちは") == pytest.approx(1.0) and spoken_seconds("안녕") == pytest.approx(0.5)
    # Chinese characters take longer than letters: the same number of them buys more audio.
    assert budget_frames("你" * 20, ON) > budget_frames("a" * 20, ON)
    assert budget_frames("Hello.", ON) == int((5 + 3 * 1.225) * 25)  # 216 frames: 8.7 s for a word
    assert budget_frames("Hello.", GuardSettings(text_budget=0)) is None


def test_the_text_budget_ends_babble():
    frames = noise_frames(400)
    guard = RunawayGuard(ON, "Hi.")
    out, fed = drive(guard, frames, speech(400))
    budget = budget_frames("Hi.", ON)
    assert guard.reason == "text_budget" and fed == budget
    assert out.shape[0] == budget * SAMPLES_PER_FRAME
    assert np.all(np.abs(out[-10:]) < np.abs(out[-300:-200]).max())  # faded, no click


def test_min_frames_puts_off_every_detector():
    stuck = noise_frames(1)[0]
    guard = RunawayGuard(ON, "Hi.", min_frames=300)
    _, fed = drive(guard, [stuck] * 290, speech(290))
    assert guard.reason is None and fed == 290


# ---- how a generation ended -------------------------------------------------------------------------------------
def test_finish_reasons():
    assert ended_by(120, 120) == LENGTH and ended_by(37, 120) == STOP
    stats = GenerationStats()
    for reason, why in [(STOP, None), (LENGTH, None), (RUNAWAY, "silence"), (RUNAWAY, "repetition"), (STOP, None)]:
        record_finish(stats, reason, why)
    assert (stats.finish_reason, stats.runaway_reason) == (RUNAWAY, "silence")  # long-form: the most telling, first


def test_settings_are_checked():
    for bad in ({"silence_s": -1}, {"silence_db": 3}, {"repetition_s": 0.01}, {"text_budget": float("nan")}):
        with pytest.raises(ValueError):
            GuardSettings(**bad)
    info = ON.describe()
    assert info["enabled"] and info["repetition_s"] == 1.0 and info["seconds_per"]["cjk"] == 0.33
