"""The comparison the engine tests use off the CPU (agreement.py): its reference reproduces the engine's choices on
the CPU, a divergence at a near-tie passes and one anywhere else fails."""

from __future__ import annotations

import pytest
import torch
from agreement import (
    IN,
    MARGINAL,
    OUT,
    Divergence,
    Keys,
    columns,
    first_divergence,
    judge,
    keys,
    noise,
    ras_may_redraw,
    teacher_forced_logits,
)

from helpers import msgs, run
from model_pool.request import SamplingParams

TEXT = "Numbers 1 2 3."


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, ras_win_len=0, max_new_tokens=40),
    SamplingParams(seed=11, temperature=0.8, top_k=40, top_p=1.0, ras_win_len=0, max_new_tokens=40),
])
def test_the_reference_keys_pick_the_engines_codes(engine, loaded, params):
    """Teacher-forced on a run's own codes, the eager model's keys (its logits; tempered logits minus the log of
    the seed's noise) have their maximum at every code the engine chose: the helper's columns, logits and noise
    line up with the engine's steps."""
    frames = run(engine, TEXT, params)
    prompt = engine.encode_prompt(msgs(TEXT))
    steps = frames.shape[0] + 1
    fed = columns(frames, steps)
    logits = teacher_forced_logits(loaded.model, prompt, fed[:-1])
    for t in range(1, steps):
        q = noise(params.seed, t, tuple(logits.shape[1:]), loaded.device) if params.temperature else None
        key = keys(logits[t], params, t, q, tolerance=0.0)  # the selection itself, no margin
        chosen = fed[t, :t]  # codebooks past t are still the stream-begin code
        best = key.key.masked_fill(key.kept == OUT, float("-inf"))[: len(chosen)].argmax(dim=-1)
        assert torch.equal(best, chosen), f"step {t}"


def test_the_first_divergence_is_the_earliest_step_in_delay_order():
    a = torch.zeros((6, 8), dtype=torch.long)
    b = a.clone()
    b[4, 0] = 9  # frame 4, codebook 0: step 5
    b[1, 5] = 7  # frame 1, codebook 5: step 7, later although an earlier frame
    b[3, 1] = 3  # step 5 too
    found = first_divergence(a, b)
    assert (found.step, found.codebooks, found.theirs) == (5, [0, 1], [9, 3])
    assert first_divergence(a, a) is None


def synthetic(step: int, near: int, far: int):
    """Keys with code 5 best, `near` a hair below it, `far` well below, at `step`; code 9 is the best but sits at the
    edge of the row's top-k (marginal)."""
    key = torch.zeros((8, 1026))
    key[:, 5] = 1.0
    key[:, near] = 1.0 - 0.004
    key[:, far] = 0.5
    kept = torch.full((8, 1026), IN, dtype=torch.int8)
    key[:, 9], kept[:, 9] = 3.0, MARGINAL

    def keys_at(s):
        assert s == step
        return Keys(key, kept, torch.zeros(8, dtype=torch.bool), 0.03)

    return keys_at


def test_a_near_tie_passes_and_a_far_choice_fails():
    a = torch.full((4, 8), 5, dtype=torch.long)
    b = a.clone()
    b[2, 0] = 6  # step 3
    found = judge(a, b, synthetic(3, near=6, far=7))
    assert isinstance(found, Divergence) and found.step == 3 and found.gaps == [pytest.approx(0.004, abs=1e-6)]
    b[2, 0] = 9  # the marginal code: one side kept it, the other did not
    assert judge(a, b, synthetic(3, near=6, far=7)).gaps == [pytest.approx(0.0)]
    b[2, 0] = 7
    with pytest.raises(AssertionError, match="a defect, not a near-tie"):
        judge(a, b, synthetic(3, near=6, far=7))
    with pytest.raises(AssertionError, match="frames"):
        judge(a, a[:3], synthetic(3, near=6, far=7))


def test_top_k_and_top_p_edges_are_marginal():
    logits = torch.linspace(1.0, 0.0, 1026).repeat(8, 1)  # code c's logit is 1 - c/1025
    # top-k 10: the 10th best is code 9; a margin of 2 x 0.0005 reaches one code either side of it
    top_k = keys(logits, SamplingParams(seed=1, temperature=1.0, top_k=10, top_p=1.0), 5, torch.ones((8, 1026)),
                 tolerance=0.0005).kept[0]
    assert (top_k[:8] == IN).all() and (top_k[8:11] == MARGINAL).all() and (top_k[11:] == OUT).all()
    # top-p: a code is kept while the mass of the likelier codes is under top_p
    peaked = torch.tensor([4.0, 3.0, 2.0, 1.0] + [-30.0] * 1022).repeat(8, 1)
    p = peaked.softmax(dim=-1)[0]
    above = p.cumsum(0) - p  # 0, 0.644, 0.881, 0.968, 1.0 ...
    top_p = keys(peaked, SamplingParams(seed=1, temperature=1.0, top_k=0, top_p=0.9), 5, torch.ones((8, 1026)),
                 tolerance=0.005).kept[0]
    assert float(above[2]) < 0.89 and float(above[3]) > 0.91
    assert top_p[:3].tolist() == [IN] * 3 and (top_p[3:] == OUT).all()
    near = keys(peaked, SamplingParams(seed=1, temperature=1.0, top_k=0, top_p=float(above[3]) - 0.001), 5,
                torch.ones((8, 1026)), tolerance=0.005).kept[0]
    assert near[3] == MARGINAL
    greedy = keys(logits, SamplingParams(temperature=0), 5).kept
    assert (greedy == IN).all()


def test_a_ras_redraw_at_the_divergence_is_reported_not_judged():
    params = SamplingParams(temperature=0, ras_win_len=4, ras_win_max_num_repeat=2)
    key = keys(torch.zeros((8, 1026)).index_fill_(1, torch.tensor([5]), 1.0), params, 3)
    history = [torch.full((8,), 5), torch.full((8,), 3), torch.full((8,), 5)]  # code 5 twice in the window
    assert ras_may_redraw(key, params, history).all()
    assert not ras_may_redraw(key, params, history[:1]).any()
    assert not ras_may_redraw(key, SamplingParams(temperature=0, ras_win_len=0), history).any()
