"""The vocoder stage: windows asked for at the same time decoded in one codec call per length, each stream's audio
the same as decoded alone (to the batched convolution's rounding), and a fault pinned on its stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import at_once
from model_pool.engine.vocoder import Vocoder


@pytest.fixture
def batched(engine):
    return Vocoder(engine.codec.decode_batch, batched=True, name="test-vocoder")


def windows(n: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 1024, (n, 8), generator=g) for _ in range(count)]


def test_the_cpu_decodes_in_the_asking_thread_bit_for_bit(engine):
    assert not engine.codec.vocoder.batched
    frames = windows(22, 1)[0]
    assert np.array_equal(engine.codec.decode(frames), engine.codec.decode_batch(frames.unsqueeze(0))[0])


def test_concurrent_windows_share_codec_calls_and_keep_their_audio(engine, batched):
    frames = windows(22, 6)
    alone = [engine.codec.decode(f) for f in frames]
    original = batched._decode_batch
    seen = []

    def gated(stack):  # the first call waits until every other request is queued behind it, so the rest coalesce
        if not seen:
            with batched._cond:
                assert batched._cond.wait_for(lambda: stack.shape[0] + len(batched._pending) == len(frames), 30)
        seen.append(stack.shape[0])
        return original(stack)

    batched._decode_batch = gated

    def ask(f):
        return batched.decode(f)

    results = at_once([lambda f=f: ask(f) for f in frames])
    for got, expected in zip(results, alone):
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-6
    assert sum(seen) == len(frames) and len(seen) < len(frames)  # fewer codec calls than windows
    assert max(seen) > 1


def test_a_fault_in_a_batched_call_fails_its_stream_alone(engine, batched):
    frames = windows(22, 4, seed=3)
    victim = frames[2]
    original = batched._decode_batch

    def faulty(stack):
        if any(torch.equal(f, victim) for f in stack):
            raise RuntimeError("the victim's codes broke the codec")
        return original(stack)

    batched._decode_batch = faulty

    def ask(f):
        try:
            return batched.decode(f)
        except RuntimeError as exc:
            return exc

    results = at_once([lambda f=f: ask(f) for f in frames])
    assert isinstance(results[2], RuntimeError)
    for i in (0, 1, 3):
        assert np.abs(results[i] - engine.codec.decode(frames[i])).max() <= 1e-6
