"""Continuous batching: requests join a running batch, leave it at once, and never change each other's audio."""

from __future__ import annotations

import threading

import pytest
import torch

from helpers import TEXTS, msgs, run, run_together
from model_pool.engine import HiggsEngine
from model_pool.engine.voice_cache import VoiceCache
from model_pool.request import SamplingParams


@pytest.fixture(scope="module")
def batched(loaded):
    return HiggsEngine(loaded, VoiceCache(), name="batched", max_batch_size=8)


def test_greedy_batched_equals_alone_with_different_lengths(batched):
    jobs = [(text, SamplingParams(temperature=0, max_new_tokens=n)) for text, n in zip(TEXTS, (40, 25, 60, 33))]
    alone = [run(batched, *job) for job in jobs]
    batched.runner.counters.reset()
    together = run_together(batched, jobs)
    assert batched.runner.counters.max_rows >= 2  # they really shared batches
    for a, b, (_, params) in zip(alone, together, jobs):
        assert b.shape == (params.max_new_tokens - 8, 8)
        assert torch.equal(a, b)


def test_seeded_sampling_batched_equals_alone(batched):
    jobs = [(text, SamplingParams(seed=100 + i, max_new_tokens=40)) for i, text in enumerate(TEXTS)]
    alone = [run(batched, *job) for job in jobs]
    batched.runner.counters.reset()
    together = run_together(batched, jobs)
    assert batched.runner.counters.max_rows >= 2
    assert all(torch.equal(a, b) for a, b in zip(alone, together))


def test_a_request_joins_a_running_batch_without_waiting(batched):
    long_started, long_done = threading.Event(), threading.Event()
    seen_steps = []

    def on_long_step(step):
        seen_steps.append(step.index)
        if step.index == 5:
            long_started.set()

    def long_job():
        run(batched, TEXTS[1], SamplingParams(temperature=0, max_new_tokens=400), on_step=on_long_step)
        long_done.set()

    t = threading.Thread(target=long_job)
    t.start()
    assert long_started.wait(60)
    short = run(batched, TEXTS[0], SamplingParams(temperature=0, max_new_tokens=30))
    # The short request finished while the long one was still generating: it joined the running batch.
    assert not long_done.is_set()
    assert short.shape == (22, 8)
    t.join(120)
    assert seen_steps == list(range(400))


def test_cancelled_row_leaves_and_the_others_are_unaffected(batched):
    params = SamplingParams(temperature=0, max_new_tokens=80)
    alone = run(batched, TEXTS[2], params)
    cancel = threading.Event()
    results = {}

    def victim():
        results["victim"] = run(batched, TEXTS[0], SamplingParams(temperature=0, max_new_tokens=500), cancel,
                                on_step=lambda s: cancel.set() if s.index == 20 else None)

    def survivor():
        results["survivor"] = run(batched, TEXTS[2], params)

    threads = [threading.Thread(target=victim), threading.Thread(target=survivor)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["victim"].shape[0] == 21 - 8
    assert torch.equal(results["survivor"], alone)


def test_batch_size_one_serialises(loaded):
    engine = HiggsEngine(loaded, VoiceCache(), name="single", max_batch_size=1)
    jobs = [(text, SamplingParams(temperature=0, max_new_tokens=20)) for text in TEXTS[:3]]
    run_together(engine, jobs)
    assert engine.runner.counters.max_rows == 1


def test_a_row_that_fills_its_context_exactly_runs_to_the_end(loaded):
    """prompt + max_new_tokens == the context is allowed (service.fits): the step launched while the last report is
    on its way to the host must not give such a row a column it does not have."""
    probe = HiggsEngine(loaded, VoiceCache(), name="probe", max_batch_size=1)
    tokens = probe.encode_prompt(msgs(TEXTS[0])).input_ids.shape[0]
    full = HiggsEngine(loaded, VoiceCache(), name="full", max_batch_size=2, context_tokens=tokens + 40)
    params = SamplingParams(temperature=0, max_new_tokens=40)
    assert run(full, TEXTS[0], params).shape == (32, 8)
    together = run_together(full, [(TEXTS[0], params), (TEXTS[2], SamplingParams(temperature=0, max_new_tokens=30))])
    assert [f.shape[0] for f in together] == [32, 22]
