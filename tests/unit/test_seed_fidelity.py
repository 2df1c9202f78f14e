"""A seeded request through the real engine (the tiny model, the batch loop, the slot cache) gives the codes Boson's
reference draws for that seed. The reference runs the same model step by step through transformers' forward and
selects codes as upstream does (boson_reference.ReferenceRow): exactly with RAS off, and with RAS on up to the
reference's first redraw."""

from __future__ import annotations

import pytest
import torch
from boson_reference import K, ReferenceRow, V
from transformers import DynamicCache

from helpers import msgs
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.prompt.planner import PromptPlanner
from model_pool.request import GenerationRequest, SamplingParams

STEPS = 48


def reference_row(engine, prompt, params: SamplingParams) -> ReferenceRow:
    model, row = engine.model, ReferenceRow(params, prompt.audio_out_tail)
    cache = DynamicCache(config=model.config)
    audio = {"audio_input_ids": prompt.audio_ids.unsqueeze(0)} if prompt.audio_ids is not None else {}
    position = prompt.input_ids.shape[0]
    with torch.inference_mode():
        model(input_ids=prompt.input_ids.unsqueeze(0), past_key_values=cache, use_cache=True, logits_to_keep=1,
              **audio)
        codes = row.step(None)  # the stream-begin column: upstream samples nothing from these logits
        while not row.finished:
            out = model(input_ids=torch.tensor([[engine.prompts.audio_ids[0]]]), audio_input_ids=codes.view(1, 1, K),
                        position_ids=torch.tensor([[position]]), past_key_values=cache, use_cache=True)
            position += 1
            codes = row.step(out.logits[0, -1].view(K, V))
    return row


def server_frames(engine, prompt, params: SamplingParams) -> torch.Tensor:
    return torch.stack([s.frame for s in engine.generate(prompt, params) if s.frame is not None])


@pytest.fixture
def clone_prompt(engine, voice_dir, scene_dir):
    plan = PromptPlanner(VoiceLibrary(voice_dir), SceneLibrary(scene_dir)).plan(
        GenerationRequest(text="Say this.", ref_audio="belinda"))
    return engine.encode_prompt(plan.conversation(0, []))


@pytest.mark.parametrize("params", [
    SamplingParams(seed=1234, temperature=0.7, top_k=50, top_p=0.95, ras_win_len=0, max_new_tokens=STEPS),
    SamplingParams(seed=7, temperature=1.0, top_k=0, top_p=1.0, ras_win_len=0, max_new_tokens=STEPS),
    SamplingParams(seed=1234, max_new_tokens=STEPS),  # the defaults, RAS 7 / 2: no redraw here on this model
])
@pytest.mark.parametrize("mode", ["smart voice", "clone"])
def test_a_seed_gives_the_references_codes(engine, clone_prompt, params, mode):
    prompt = clone_prompt if mode == "clone" else engine.encode_prompt(msgs("Hello world."))
    ref = reference_row(engine, prompt, params)
    assert ref.remaining is None and not ref.redraws  # cut by max_new_tokens: upstream drops the last frame
    assert torch.equal(server_frames(engine, prompt, params)[:-1], ref.frames())


@pytest.mark.parametrize("window", [20, 60])  # 60: the first redraw is of a code the window finds in the clip
def test_with_ras_a_seed_gives_the_references_codes_up_to_its_first_redraw(engine, clone_prompt, window):
    """Every code drawn before the reference's first redraw is the reference's, and at that step the reference's
    redraw decisions are ours: the codebooks it kept hold its codes, the ones it redrew no longer hold the drawn
    code (each redraw comes from our own RAS generator, so its value is not the reference's)."""
    params = SamplingParams(seed=1234, temperature=0.7, top_k=50, top_p=0.95, ras_win_len=window,
                            ras_win_max_num_repeat=1, max_new_tokens=STEPS)
    ref = reference_row(engine, clone_prompt, params)
    first, redrawn = ref.redraws[0]
    mine, theirs = server_frames(engine, clone_prompt, params)[:-1], ref.frames()
    step = torch.arange(mine.shape[0]).unsqueeze(1) + 1 + torch.arange(K)  # frame j takes codebook k at step j+1+k
    kept = (step < first) | ((step == first) & ~torch.isin(torch.arange(K), torch.tensor(redrawn)))
    assert kept.sum() >= 16
    assert torch.equal(mine[kept], theirs[kept])
    for k in (k for k in redrawn if k < first):  # a free codebook (the others are stream begin either way)
        assert mine[first - 1 - k, k] != ref.candidates[first][k]
