"""The compiled step (--compile): the eager step's codes, one compilation at warm-up, none after, and a row's codes
the same alone and batched (the graph always runs every slot, so no kernel depends on the batch)."""

from __future__ import annotations

import threading

import pytest
import torch
from agreement import assert_codes_agree
from torch._dynamo.utils import counters

from helpers import TEXTS, msgs, run, run_together
from model_pool.engine import HiggsEngine
from model_pool.engine.voice_cache import VoiceCache
from model_pool.request import SamplingParams

# The session's compiled engine has a 4096-token context (windows of 256 up to 4096 columns).
CONTEXT = 4096


@pytest.fixture(scope="module")
def eager(loaded):
    return HiggsEngine(loaded, VoiceCache(), name="eager", max_batch_size=4, context_tokens=CONTEXT)


@pytest.fixture
def compiled(compiled_engine):
    return compiled_engine


JOBS = [(TEXTS[0], SamplingParams(seed=1, max_new_tokens=120)),
        (TEXTS[1], SamplingParams(temperature=0, max_new_tokens=90)),
        (TEXTS[2], SamplingParams(seed=3, max_new_tokens=600)),  # crosses the 256 and 512 windows
        (TEXTS[3], SamplingParams(seed=4, top_k=5, max_new_tokens=60))]


def test_compiled_once_at_warm_up_with_static_cache(compiled):
    assert compiled.graphs_at_warm_up == 1
    cache = compiled.runner.cache
    for tensor in (*cache.keys, *cache.values, cache.lengths, compiled.runner.codes):
        assert getattr(tensor, "_dynamo_static_input_type", None) == "unguarded"


def test_compiled_gives_the_eager_codes_and_never_recompiles(eager, compiled, loaded):
    """Alone and batched: the same codes on every device. Against the eager step: the same on the CPU; on a GPU
    the compiled kernels round bf16 differently, so the codes agree up to the first near-tie (agreement.py)."""
    expected = [run(eager, *job) for job in JOBS]
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        alone = [run(compiled, *job) for job in JOBS]  # the batch empties and refills between these
        together = run_together(compiled, JOBS)  # rows of different prompt lengths join and leave
        staggered = run_together(compiled, [(t, SamplingParams(temperature=0, max_new_tokens=30 + 40 * i))
                                            for i, (t, _) in enumerate(JOBS)])
    assert counters["stats"]["unique_graphs"] == graphs
    for (text, params), e, a, t in zip(JOBS, expected, alone, together):
        assert torch.equal(a, t), f"{text!r}: the compiled step's codes alone and batched differ"
        assert_codes_agree(a, e, loaded.model, eager.encode_prompt(msgs(text)), params,
                           what=f"compiled vs eager, {text!r}")
    assert [s.shape[0] for s in staggered] == [22 + 40 * i for i in range(4)]
    assert compiled.runner.counters.max_rows >= 2


def test_compiled_cancel_frees_the_slot(compiled):
    cancel = threading.Event()
    got = run(compiled, TEXTS[0], SamplingParams(temperature=0, max_new_tokens=300), cancel,
              on_step=lambda s: cancel.set() if s.index == 15 else None)
    assert got.shape[0] == 16 - 8
    again = run(compiled, TEXTS[0], SamplingParams(temperature=0, max_new_tokens=30))
    assert again.shape == (22, 8)
