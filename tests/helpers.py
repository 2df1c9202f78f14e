"""Helpers the tests share (fixtures live in conftest.py; the server harness in harness.py)."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from app import create_app
from app.runtime import Runtime
from app.settings import Settings
from model_pool.engine.stream_decoder import stack
from model_pool.pool import ModelPool
from model_pool.pool_loader import PoolLoader
from model_pool.prompt.planner import Turn, User

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


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


_DEMUXERS = {"wav": {"wav"}, "mp3": {"mp3"}, "opus": {"ogg"}, "aac": {"aac", "mov"}, "flac": {"flac"}}


def decode_audio(data: bytes, fmt: str) -> tuple[int | None, float]:
    """(sample rate, seconds) of an encoded file, decoded back with PyAV (ffmpeg). For Opus, which always decodes
    at 48 kHz, the rate is the input rate its OpusHead records. pcm states no rate (None); its seconds assume the
    24 kHz the API documents."""
    import av

    if fmt == "pcm":
        assert len(data) % 2 == 0
        return None, len(data) / 2 / 24000
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


def make_app(tmp_path, engine=None, loader=None, **overrides):
    settings = Settings.from_env(environ={}, overrides={
        "voice_prompts_dir": str(EXAMPLES / "voice_prompts"),
        "scene_prompts_dir": str(EXAMPLES / "scene_prompts"),
        "max_new_tokens": 120,
        "log_file": str(tmp_path / "api_server.log"),
        "load_in_background": False,
        "max_upload_mb": 1.0,
        "max_upload_seconds": 5.0,
        "ping_interval": 0.2,
        **overrides,
    })
    if loader is None and engine is not None:
        pool = ModelPool([engine])
        loader = PoolLoader(lambda: pool)
    return create_app(runtime=Runtime(settings, loader))  # no loader given: the real one loads from model_path


def wav_samples(b64: str) -> np.ndarray:
    data, rate = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="int16")
    assert rate == 24000 and data.ndim == 1
    return data


def parse_sse(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if not lines:
            continue
        name = next(ln[6:].strip() for ln in lines if ln.startswith("event:"))
        data = json.loads("".join(ln[5:].strip() for ln in lines if ln.startswith("data:")))
        events.append((name, data))
    return events


def msgs(text):
    return [Turn("system", [["Generate audio following instruction."]]), Turn("user", [[User(text)]])]


TEXTS = ["Hello world.", "A much longer sentence to make a longer prompt, with commas.", "Hi.", "Numbers 1 2 3."]


def frames(steps, num_codebooks: int = 8) -> torch.Tensor:
    """The complete frames among an engine's steps, stacked: [frames, codebooks] (the tiny model has 8)."""
    got = [step.frame for step in steps if step.frame is not None]
    return stack(got) if got else torch.zeros((0, num_codebooks), dtype=torch.long)


def run(engine, text, params, cancel=None, on_step=None, messages=None):
    """Generate `text` (or `messages`) on an engine; the frames, each step shown to on_step first."""
    steps = engine.generate(engine.encode_prompt(messages or msgs(text)), params, cancel)
    return frames(_shown(steps, on_step) if on_step else steps, engine.geometry.num_codebooks)


def _shown(steps, on_step):
    for step in steps:
        on_step(step)
        yield step


def at_once(calls: list, timeout: float = 120) -> list:
    """Run every call in its own thread, all released together (a barrier); return their results in order."""
    results, barrier = [None] * len(calls), threading.Barrier(len(calls))

    def work(i, call):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def run_together(engine, jobs):
    """Start every job (text, params) at once so they share batches; return their frames in order."""
    return at_once([lambda job=job: run(engine, *job) for job in jobs])


def openai_sdk(app, api_key: str = "none"):
    """The official openai SDK talking to the Flask app in-process (a WSGI transport, no server)."""
    import httpx2
    import openai

    base = "http://higgs.test/v1"
    client = httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url=base)
    return openai.OpenAI(api_key=api_key, base_url=base, max_retries=0, http_client=client)
