"""Shared fixtures: one tiny random-weight checkpoint per test session, built offline."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from model_pool import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def loaded(tiny_checkpoint):
    import torch

    from model_pool.engine.loader import load

    return load(str(tiny_checkpoint / "model"), str(tiny_checkpoint / "audio_tokenizer"), torch.device("cpu"))


@pytest.fixture(scope="session")
def engine(loaded):
    from model_pool.engine import HiggsEngine
    from model_pool.engine.voice_cache import VoiceCache

    return HiggsEngine(loaded, VoiceCache())


@pytest.fixture(scope="session")
def compiled_engine(loaded):
    """The compiled step (--compile on), 4 slots, a 4096-token context: compiled once for the whole session."""
    import torch
    from torch._dynamo.utils import counters

    from model_pool.engine import HiggsEngine
    from model_pool.engine.voice_cache import VoiceCache

    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    engine = HiggsEngine(loaded, VoiceCache(), name="compiled", max_batch_size=4, context_tokens=4096, compile=True)
    engine.graphs_at_warm_up = counters["stats"]["unique_graphs"] - before
    return engine


def write_voice(directory: Path, name: str, seconds: float = 2.0, transcript: str | None = "Reference words.",
                rate: int = 24000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
    path = directory / f"{name}.wav"
    sf.write(path, samples, rate)
    if transcript is not None:
        (directory / f"{name}.txt").write_text(transcript, encoding="utf-8")
    return path


@pytest.fixture
def voice_dir(tmp_path) -> Path:
    d = tmp_path / "voices"
    d.mkdir()
    write_voice(d, "belinda", transcript="I am Belinda.", seed=1)
    write_voice(d, "en_man", transcript="I am a man.", seed=2)
    write_voice(d, "mute", transcript=None, seed=3)
    (d / "profile.yaml").write_text("profiles:\n  narrator: A calm, low male voice.\n", encoding="utf-8")
    return d


@pytest.fixture
def scene_dir(tmp_path) -> Path:
    d = tmp_path / "scenes"
    d.mkdir()
    (d / "quiet_indoor.txt").write_text("Audio is recorded from a quiet room.\n", encoding="utf-8")
    return d


_DEMUXERS = {"wav": {"wav"}, "mp3": {"mp3"}, "opus": {"ogg"}, "aac": {"aac", "mov"}, "flac": {"flac"}}


def decode_audio(data: bytes, fmt: str) -> tuple[int, float]:
    """(sample rate, seconds) of an encoded file, decoded back with PyAV (ffmpeg). For Opus, which always decodes
    at 48 kHz, the rate is the input rate its OpusHead records; pcm is raw 16-bit mono at 24 kHz."""
    import io

    import av

    if fmt == "pcm":
        assert len(data) % 2 == 0
        return 24000, len(data) / 2 / 24000
    samples, rate = 0, None
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name.split(",")[0] in _DEMUXERS[fmt], container.format.name
        for frame in container.decode(audio=0):
            samples, rate = samples + frame.samples, frame.sample_rate
    seconds = samples / rate
    if fmt == "opus":
        head = data.index(b"OpusHead")
        rate = int.from_bytes(data[head + 12:head + 16], "little")
    return rate, seconds
