"""Long-form generation never fails for the cache's sake: prompts past 2048 tokens run, eager and compiled give the
same codes for them, the oldest generated chunks leave the context (logged) when a prompt would not fit, and a first
chunk that cannot fit is a 4xx before any audio."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from agreement import assert_codes_agree, exact_numerics

from helpers import frames
from model_pool.engine import HiggsEngine
from model_pool.engine.voice_cache import VoiceCache
from model_pool.errors import ContextTooLong
from model_pool.pool import ModelPool
from model_pool.pool_loader import PoolLoader
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.request import GenerationRequest, SamplingParams
from model_pool.service import GenerationStats, TTSService

# Four word chunks of 900 steps each: chunk 3's prompt carries three earlier chunks' audio, ~2700 tokens. 36 s of
# audio for two words is a runaway: the guard, which would end each chunk after about 10 s, is off.
LONG = GenerationRequest(text="One two. Three four. Five six. Seven eight.", scene_prompt="", chunk_method="word",
                         chunk_max_word_num=2, sampling=SamplingParams(temperature=0, max_new_tokens=900,
                                                                       runaway_guard=False))


def service_for(engine, voice_dir, scene_dir) -> TTSService:
    return TTSService(PoolLoader.of(ModelPool([engine])), VoiceLibrary(voice_dir), SceneLibrary(scene_dir),
                      max_new_tokens=2048)


def generate(service, request, stats=None):
    return service.generate(service.prepare(request), stats)


@pytest.fixture(scope="module")
def eager_4096(loaded):
    return HiggsEngine(loaded, VoiceCache(), name="eager-4096", max_batch_size=2, context_tokens=4096)


def test_prompts_past_2048_tokens_run_alike_eager_and_compiled(eager_4096, compiled_engine, loaded, voice_dir,
                                                                scene_dir):
    """Same prompts (every chunk's context kept), same lengths. On the CPU the audio is the same until the compiled
    kernels' float rounding (~1e-7 on the logits) flips a near-tie of this random model's flat logits, well into
    chunk 1; on a GPU (bf16) that comes within a few dozen steps. So the steps are compared on one prompt past 2048
    tokens (chunk 3's, with three chunks of codes before it): the same codes on the CPU, and on a GPU up to a
    near-tie of the two steps' numerics (agreement.py)."""
    assert compiled_engine.context_tokens == 4096
    eager_stats, compiled_stats = GenerationStats(), GenerationStats()
    service = service_for(eager_4096, voice_dir, scene_dir)
    eager = generate(service, LONG, eager_stats)
    compiled = generate(service_for(compiled_engine, voice_dir, scene_dir), LONG, compiled_stats)
    assert eager_stats.prompt_tokens == compiled_stats.prompt_tokens > 5000  # chunk 3's prompt alone is ~2700
    assert eager.shape == compiled.shape == (4 * 892 * 960,)
    if exact_numerics(loaded.model):
        first_chunk = 892 * 960
        assert np.array_equal(eager[:first_chunk], compiled[:first_chunk])

    g = torch.Generator().manual_seed(3)
    earlier = [torch.randint(0, 1024, (892, 8), generator=g) for _ in range(3)]
    prompt = eager_4096.encode_prompt(service.prepare(LONG).plan.conversation(3, earlier, 0))
    assert prompt.input_ids.shape[0] > 2048
    params = replace(LONG.sampling, max_new_tokens=48)
    ours = frames(compiled_engine.generate(prompt, params))
    theirs = frames(eager_4096.generate(prompt, params))
    assert ours.shape == (40, 8)
    assert_codes_agree(ours, theirs, loaded.model, prompt, params, what="compiled vs eager past 2048 tokens")


def test_oldest_chunks_leave_the_context_when_a_prompt_would_not_fit(loaded, voice_dir, scene_dir, caplog):
    small = HiggsEngine(loaded, VoiceCache(), name="eager-2048", max_batch_size=2, context_tokens=2048)
    service = service_for(small, voice_dir, scene_dir)
    with caplog.at_level(logging.INFO, logger="model_pool.service"):
        audio = generate(service, LONG)
    assert audio.shape == (4 * 892 * 960,)
    dropped = [r.getMessage() for r in caplog.records if "dropped the oldest generated chunk" in r.getMessage()]
    assert dropped and "chunk 2" in dropped[0]


def test_a_first_chunk_that_cannot_fit_is_refused_before_any_work(loaded, voice_dir, scene_dir):
    small = HiggsEngine(loaded, VoiceCache(), name="eager-256", max_batch_size=1, context_tokens=256)
    service = service_for(small, voice_dir, scene_dir)
    steps = small.runner.counters.steps
    with pytest.raises(ContextTooLong) as info:
        service.prepare(GenerationRequest(text="word " * 300, sampling=SamplingParams(max_new_tokens=64)))
    assert info.value.field == "text" and "context of 256 tokens" in info.value.message
    assert small.runner.counters.steps == steps
