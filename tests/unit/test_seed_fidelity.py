"""A seeded request through the real engine (the tiny model, the batch loop, the slot cache) gives the codes Boson's
reference draws for that seed. The reference runs the same model step by step through transformers' forward and
selects codes as upstream does (boson_reference.ReferenceRow): exactly with RAS off, and with RAS on up to the
reference's first redraw. The reference runs on the engine's device, its draws from a generator there.

On the CPU in float32 that holds bit for bit. Elsewhere (a GPU in bf16) the engine's decode step and transformers'
forward round the logits differently, so the codes are the reference's up to the first near-tie of the two, judged
at that step with the reference's own logits and noise (agreement.py)."""

from __future__ import annotations

import pytest
import torch
from agreement import Keys, exact_numerics, judge, keys, noise, ras_may_redraw
from boson_reference import K, ReferenceRow, V
from transformers import DynamicCache

from helpers import msgs
from model_pool.engine.stream_decoder import stack
from model_pool.prompt.library import SceneLibrary, VoiceLibrary
from model_pool.prompt.planner import PromptPlanner
from model_pool.request import GenerationRequest, SamplingParams

STEPS = 48


def reference_row(loaded, prompt, params: SamplingParams) -> ReferenceRow:
    """Boson's selection over transformers' forward, step by step, on the model's device (everything it feeds the
    model goes there: the prompt and each step's codes)."""
    model, device, row = loaded.model, loaded.device, ReferenceRow(params, prompt.audio_out_tail)
    cache = DynamicCache(config=model.config)
    audio = {"audio_input_ids": prompt.audio_ids.unsqueeze(0).to(device)} if prompt.audio_ids is not None else {}
    position = prompt.input_ids.shape[0]
    audio_token = torch.tensor([[model.config.audio_token_id]], device=device)
    with torch.inference_mode():
        model(input_ids=prompt.input_ids.unsqueeze(0).to(device), past_key_values=cache, use_cache=True,
              logits_to_keep=1, **audio)
        codes = row.step(None)  # the stream-begin column: upstream samples nothing from these logits
        while not row.finished:
            out = model(input_ids=audio_token, audio_input_ids=codes.view(1, 1, K).to(device),
                        position_ids=torch.tensor([[position]], device=device), past_key_values=cache, use_cache=True)
            position += 1
            codes = row.step(out.logits[0, -1].view(K, V))
    return row


def agrees_off_the_cpu(mine: torch.Tensor, ref: ReferenceRow, params: SamplingParams, prompt, device, until=None):
    """The engine's frames against the reference's where their numerics differ: equal up to the first step where
    they part, and there a near-tie under the reference's own keys (its logits, the seed's noise). Steps from
    `until` on (the reference's first RAS redraw, whose noise is upstream's, not the server's) are not compared.
    Returns the divergence, if any."""
    theirs = ref.frames().clone()
    if until is not None:
        step = torch.arange(theirs.shape[0]).unsqueeze(1) + 1 + torch.arange(K)
        theirs[step >= until] = mine[step >= until]
    context = 0 if prompt.audio_out_tail is None else prompt.audio_out_tail.shape[0]

    def keys_at(step: int) -> Keys:
        logits = ref.logits[step]
        key = keys(logits, params, step, noise(params.seed, step, tuple(logits.shape), device))
        key.redraw = ras_may_redraw(key, params, ref.audio_out[: context + step])
        return key

    return judge(mine, theirs, keys_at, what=f"engine vs Boson's reference, {params}")


def server_frames(engine, prompt, params: SamplingParams) -> torch.Tensor:
    return stack([s.frame for s in engine.generate(prompt, params) if s.frame is not None])


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
def test_a_seed_gives_the_references_codes(engine, loaded, clone_prompt, params, mode):
    prompt = clone_prompt if mode == "clone" else engine.encode_prompt(msgs("Hello world."))
    ref = reference_row(loaded, prompt, params)
    mine = server_frames(engine, prompt, params)[:-1]  # cut by max_new_tokens: upstream drops the last frame
    if exact_numerics(loaded.model):
        assert ref.remaining is None and not ref.redraws
        assert torch.equal(mine, ref.frames())
    else:
        agrees_off_the_cpu(mine, ref, params, prompt, loaded.device, ref.redraws[0][0] if ref.redraws else None)


@pytest.mark.parametrize("window", [20, 60])  # 60: the first redraw is of a code the window finds in the clip
def test_with_ras_a_seed_gives_the_references_codes_up_to_its_first_redraw(engine, loaded, clone_prompt, window):
    """Every code drawn before the reference's first redraw is the reference's, and at that step the reference's
    redraw decisions are ours: the codebooks it kept hold its codes, the ones it redrew no longer hold the drawn
    code (each redraw comes from our own RAS generator, so its value is not the reference's)."""
    params = SamplingParams(seed=1234, temperature=0.7, top_k=50, top_p=0.95, ras_win_len=window,
                            ras_win_max_num_repeat=1, max_new_tokens=STEPS)
    ref = reference_row(loaded, clone_prompt, params)
    assert ref.redraws, "a window over the clip with a quota of 1 redraws early"
    first, redrawn = ref.redraws[0]
    mine, theirs = server_frames(engine, clone_prompt, params)[:-1], ref.frames()
    step = torch.arange(mine.shape[0]).unsqueeze(1) + 1 + torch.arange(K)  # frame j takes codebook k at step j+1+k
    kept = (step < first) | ((step == first) & ~torch.isin(torch.arange(K), torch.tensor(redrawn)))
    assert kept.sum() >= 16
    if not exact_numerics(loaded.model):
        parted = agrees_off_the_cpu(mine, ref, params, clone_prompt, loaded.device, until=first)
        if parted is not None:
            return  # the runs parted at a near-tie before the redraw: its decisions there are not comparable
    assert torch.equal(mine[kept], theirs[kept])
    for k in (k for k in redrawn if k < first):  # a free codebook (the others are stream begin either way)
        assert mine[first - 1 - k, k] != ref.candidates[first][k]
