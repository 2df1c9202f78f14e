"""The compiled fast path (--compile): static KV cache + torch.compile, same codes as the eager path."""

from __future__ import annotations

import threading

import pytest
import torch

from model_pool.engine import HiggsEngine
from model_pool.request import SamplingParams
from model_pool.voice_cache import VoiceCache
from test_batching import TEXTS, run, run_together


@pytest.fixture(scope="module")
def eager(loaded):
    return HiggsEngine(loaded, VoiceCache(), name="eager", max_batch_size=4)


@pytest.fixture(scope="module")
def static_eager(loaded):
    """The static-cache runner without compilation: isolates the cache bookkeeping from the compiler."""
    return _static(loaded, compile=False)


@pytest.fixture(scope="module")
def compiled(loaded):
    return _static(loaded, compile=True)


def _static(loaded, compile: bool):
    from model_pool.static_batching import StaticBatchRunner

    engine = HiggsEngine(loaded, VoiceCache(), name=f"static-{compile}", max_batch_size=4)
    # A short cache so the tests also cross the end of it and exercise compaction.
    engine.runner = StaticBatchRunner(engine, 4, max_prompt_tokens=256, max_cache_len=400, compile=compile)
    return engine


JOBS = [(TEXTS[0], SamplingParams(seed=1, max_new_tokens=120)),
        (TEXTS[1], SamplingParams(temperature=0, max_new_tokens=90)),
        (TEXTS[2], SamplingParams(seed=3, max_new_tokens=200)),
        (TEXTS[3], SamplingParams(seed=4, top_k=5, max_new_tokens=60))]


@pytest.mark.parametrize("which", ["static_eager", "compiled"])
def test_static_cache_paths_give_the_eager_codes(request, eager, which):
    engine = request.getfixturevalue(which)
    expected = [run(eager, *job) for job in JOBS]
    alone = [run(engine, *job) for job in JOBS]
    together = run_together(engine, JOBS)
    for e, a, t in zip(expected, alone, together):
        assert torch.equal(e, a) and torch.equal(e, t)
    assert engine.runner.max_rows_seen >= 2
    assert engine.runner.compactions >= 1  # the 400-column cache filled up and was compacted


def test_compiled_cancel_frees_the_slot(compiled):
    cancel = threading.Event()
    got = run(compiled, TEXTS[0], SamplingParams(temperature=0, max_new_tokens=300), cancel,
              on_step=lambda s: cancel.set() if s.index == 15 else None)
    assert got.shape[0] == 16 - 8
    again = run(compiled, TEXTS[0], SamplingParams(temperature=0, max_new_tokens=30))
    assert again.shape == (22, 8)
