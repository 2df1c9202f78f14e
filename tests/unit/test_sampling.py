"""BatchSampler against a per-row reference built from what we did not write (boson_reference.py): Boson AI's
_sample_audio_tokens with transformers' logits warpers and torch.multinomial on one torch.Generator(seed), and its
delay-pattern / stream-end state machine.

The reference draws as Boson's code does: nothing at the stream-begin step, one multinomial per later step when it
samples, and a RAS redraw from the same generator only for the codebooks it redraws, over a window that starts in
the prompt's assistant audio. So with RAS off a seeded row must give the reference's codes, alone and in any
batch; with RAS on, up to the reference's first redraw (ours come from a second generator, so a redraw never
shifts the main stream)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from boson_reference import BOS, EOS, K, ReferenceRow, V, delayed, reference

from model_pool.defaults import MIN_TEMPERATURE
from model_pool.engine.sampling import REPORT_BAD, REPORT_EMIT, REPORT_FINISHED, BatchSampler, row_generator
from model_pool.request import SamplingParams


def run_ours(sampler: BatchSampler, slots: list[int], params: list[SamplingParams], logits_fn, steps: int,
             contexts=None):
    """Drive the batch sampler like the runner does; per row: (frames, the step it finished at, its columns)."""
    contexts = contexts or [None] * len(params)
    randoms = [row_generator(p, SimpleNamespace(audio_out_tail=c), "cpu") for p, c in zip(params, contexts)]
    for slot, p in zip(slots, params):
        sampler.admit(slot, p)
    frames = {s: [] for s in slots}
    columns = {s: [] for s in slots}
    done = {}
    for t in range(steps):
        live = [i for i, s in enumerate(slots) if s not in done]
        if not live:
            break
        rows = torch.tensor([slots[i] for i in live])
        for i in live:
            sampler.draw_noise(slots[i], randoms[i], t)
        logits = torch.stack([logits_fn(slots[i], t) for i in live])
        sel = sampler.select(rows, logits, ras_span=max(params[i].ras_win_len or 0 for i in live),
                             sampling=any(params[i].temperature >= MIN_TEMPERATURE for i in live))
        sampler.commit(rows, sel)
        for i, codes, line in zip(live, sel.codes, sel.report):
            assert not line[REPORT_BAD]
            columns[slots[i]].append(codes.clone())
            if line[REPORT_EMIT]:
                frames[slots[i]].append(line[:K].clone())
            if line[REPORT_FINISHED]:
                done[slots[i]] = t
    return {s: (torch.stack(f) if f else torch.zeros((0, K), dtype=torch.long), done.get(s), torch.stack(columns[s]))
            for s, f in frames.items()}


def alone(params: SamplingParams, logits_fn, steps: int, context=None):
    return run_ours(BatchSampler(1, K, V, BOS, EOS, "cpu", 64), [0], [params], logits_fn, steps, [context])[0]


def random_logits(seed: int, eos_from: int | None = None, spread: float = 3.0, popular: float = 4.0):
    """Deterministic logits per (seed, step); from step `eos_from` one codebook strongly prefers stream end."""

    def fn(slot, t):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        x = torch.randn(K, V, generator=g) * spread
        x[:, 7:12] += popular  # a few popular codes, so RAS has repeats to redraw
        if eos_from is not None and t >= eos_from:
            x[(seed + t) % K, EOS] = 30.0
        return x

    return fn


# Sampling from the defaults to extremes, greedy, and a stream-end suppression; RAS off.
PARAMS = [
    SamplingParams(seed=1, temperature=0.7, top_k=50, top_p=0.95, ras_win_len=0, max_new_tokens=60),
    SamplingParams(seed=2, temperature=0.0, ras_win_len=0, max_new_tokens=60),
    SamplingParams(seed=3, temperature=1.3, top_k=0, top_p=0.5, ras_win_len=0, max_new_tokens=60),
    SamplingParams(seed=4, temperature=1e-300, ras_win_len=0, max_new_tokens=60),  # below the bound: greedy
    SamplingParams(seed=5, temperature=2.0, top_k=1026, top_p=1e-9, ras_win_len=0, max_new_tokens=60),
    SamplingParams(seed=6, temperature=0.9, top_k=1, ras_win_len=0, max_new_tokens=60, min_new_tokens=30),
    SamplingParams(seed=1234, temperature=1.0, top_k=0, top_p=1.0, ras_win_len=0, max_new_tokens=60),
]
SLOTS = [5, 0, 3, 7, 1, 2, 4]


def check_frames(mine, ref: ReferenceRow, label: str) -> None:
    expected = ref.frames()
    if ref.remaining is None:  # cut by max_new_tokens: upstream drops the last (complete) frame, we keep it
        assert torch.equal(mine[0][:-1], expected), label
    else:  # ended by the stream-end code: the same frames, and we stop no later than the reference (one step
        # earlier, unless the end came in the last codebook): its last step only completes the dropped end frame
        assert torch.equal(mine[0], expected), label
        assert len(ref.columns) - 2 <= mine[1] <= len(ref.columns) - 1, label


@pytest.mark.parametrize("eos_from", [None, 20])
def test_seeded_rows_draw_the_references_codes_alone_and_together(eos_from):
    logit_fns = [random_logits(i + 1, eos_from) for i in range(len(PARAMS))]
    together = run_ours(BatchSampler(8, K, V, BOS, EOS, "cpu", 64), SLOTS, PARAMS,
                        lambda slot, t: logit_fns[SLOTS.index(slot)](slot, t), 80)
    for i, p in enumerate(PARAMS):
        ref = reference(p, logit_fns[i], 80)
        mine, single = together[SLOTS[i]], alone(p, logit_fns[i], 80)
        assert torch.equal(single[0], mine[0]) and single[1] == mine[1], f"row {i}: batched differs from alone"
        steps = min(len(ref.columns), mine[2].shape[0])
        assert torch.equal(mine[2][:steps], torch.stack(ref.columns[:steps])), f"row {i}: columns"
        check_frames(mine, ref, f"row {i}")


CLIP_CONTEXT = delayed(torch.randint(0, 1024, (30, K), generator=torch.Generator().manual_seed(7)) % 12)
RAS_PARAMS = [  # (params, the prompt's audio-out context); no stream end, so every case runs its 60 steps
    (SamplingParams(seed=11, temperature=0.7, top_k=50, top_p=0.95, max_new_tokens=60, min_new_tokens=60), None),
    (SamplingParams(seed=12, temperature=0.7, top_k=50, top_p=0.95, max_new_tokens=60, min_new_tokens=60),
     CLIP_CONTEXT),
    (SamplingParams(seed=13, temperature=1.0, top_k=0, ras_win_len=12, ras_win_max_num_repeat=2,
                    max_new_tokens=60, min_new_tokens=60), CLIP_CONTEXT),
    (SamplingParams(seed=14, temperature=0.0, ras_win_len=10, ras_win_max_num_repeat=1, max_new_tokens=60,
                    min_new_tokens=60), CLIP_CONTEXT),
]


@pytest.mark.parametrize("case", range(len(RAS_PARAMS)))
def test_with_ras_the_codes_are_the_references_up_to_its_first_redraw(case):
    """Every column before the reference's first redraw, and at that step every codebook it did not redraw; the
    redraw decisions are the reference's, so a window that reaches into the prompt is the reference's window."""
    p, context = RAS_PARAMS[case]
    logits = random_logits(case + 20, popular=6.0)  # the first redraws come at steps 17, 10, 10 and 1
    ref = reference(p, logits, 60, context)
    mine = alone(p, logits, 60, context)
    assert ref.redraws, "the reference never redrew: the case proves nothing"
    first, redrawn = ref.redraws[0]
    assert torch.equal(mine[2][:first], torch.stack(ref.columns[:first]))
    kept = [k for k in range(K) if k not in redrawn]
    assert torch.equal(mine[2][first, kept], ref.columns[first][kept])
    batched = run_ours(BatchSampler(3, K, V, BOS, EOS, "cpu", 64), [2, 0], [PARAMS[0], p],
                       lambda slot, t: (random_logits(1) if slot == 2 else logits)(slot, t), 60, [None, context])[0]
    assert torch.equal(batched[2], mine[2]), "batched differs from alone"


def test_a_ras_redraw_does_not_shift_the_main_stream():
    """Same seed and logits with RAS on and off: the main draws are the same, so a code differs only where RAS
    found the drawn code repeated (and redrew it); everywhere else, before and after each redraw, it is equal."""
    on = SamplingParams(seed=21, temperature=1.0, top_k=40, ras_win_len=7, ras_win_max_num_repeat=2,
                        max_new_tokens=80, min_new_tokens=80)
    off = SamplingParams(seed=21, temperature=1.0, top_k=40, ras_win_len=0, max_new_tokens=80, min_new_tokens=80)
    logits = random_logits(5, popular=6.0)
    with_ras, without = alone(on, logits, 80)[2], alone(off, logits, 80)[2]
    repeated = torch.zeros_like(with_ras, dtype=torch.bool)
    for t in range(1, with_ras.shape[0]):
        window = with_ras[max(0, t - 7):t]
        repeated[t] = (window == without[t]).sum(dim=0) >= 2  # the drawn code, counted in our own window
        repeated[t, t:] = False  # codebooks still in the delay pattern: stream begin, whatever RAS finds
    assert repeated.sum() >= 10
    assert torch.equal(with_ras[~repeated], without[~repeated])
    assert (with_ras[repeated] != without[repeated]).any()  # redrawn (the untempered draw may find it again)


def test_ras_window_reaches_into_the_prompts_audio():
    """A clone whose clip ends in code 7, greedy logits that prefer 7: with a 10-column window and one repeat
    allowed, the window at step 1 (one stream-begin column, eight stream-end ones from the clip's delay pattern)
    reaches the clip's last code, so 7 is redrawn at once, as the reference does; without the clip, it is kept."""
    p = SamplingParams(seed=3, temperature=0, ras_win_len=10, ras_win_max_num_repeat=1, max_new_tokens=20)

    def logits(slot, t):
        x = torch.zeros(K, V)
        x[:, 7] = 1.0  # greedy takes 7; a redraw (from the untempered distribution) almost never does
        return x

    clip = delayed(torch.full((20, K), 7))
    ref = reference(p, logits, 20, clip)
    assert ref.redraws[0] == (1, list(range(K)))  # every codebook's window reaches a 7 (all but 0 are then BOS)
    cloned, smart = alone(p, logits, 20, clip)[2], alone(p, logits, 20)[2]
    assert cloned[1, 0] != 7 and smart[1, 0] == 7
    assert torch.equal(cloned[:1], smart[:1])
    default = SamplingParams(seed=3, temperature=0, max_new_tokens=20)  # window 7: only the clip's stream ends
    assert torch.equal(alone(default, logits, 20, clip)[2][:2], alone(default, logits, 20)[2][:2])


def test_ras_counts_stream_codes_as_the_reference_does():
    """The reference counts every code in its window, the prompt's stream-end columns too: a clone whose model
    wants to end at step 1 has that end redrawn (the clip's delay pattern leaves six stream ends in a 7-column
    window); without a clip in the window it ends."""
    p = SamplingParams(seed=4, temperature=0, max_new_tokens=20)

    def logits(slot, t):
        x = torch.zeros(K, V)
        x[:, 100 + t] = 0.5
        x[0, EOS] = 1.0 if t == 1 else -1.0
        return x

    clip = delayed(torch.randint(0, 1024, (20, K), generator=torch.Generator().manual_seed(1)))
    assert reference(p, logits, 20, clip).redraws[0] == (1, [0])
    assert alone(p, logits, 20, clip)[2][1, 0] != EOS and alone(p, logits, 20)[2][1, 0] == EOS


def test_greedy_rows_without_a_seed_repeat_with_ras():
    """RAS redraws come from a fixed seed when the request has none, so temperature 0 is repeatable."""
    p = SamplingParams(seed=None, temperature=0, ras_win_len=7, ras_win_max_num_repeat=2, max_new_tokens=40)
    logits = random_logits(8, popular=6.0)
    first, second = alone(p, logits, 40)[2], alone(p, logits, 40)[2]
    assert torch.equal(first, second)
    assert (first[9:] != logits(None, 0).argmax(-1)).any()  # RAS did redraw


def test_ras_applies_after_argmax():
    """Greedy would repeat code 7 forever; RAS redraws the repeats from the untempered distribution."""
    p = SamplingParams(seed=9, temperature=0, ras_win_len=7, ras_win_max_num_repeat=2, max_new_tokens=40)

    def logits(slot, t):
        x = torch.zeros(K, V)
        x[:, 7] = 2.0
        return x

    frames, _, columns = alone(p, logits, 40)
    assert (frames != 7).any(), "RAS never redrew a repeated greedy code"
    first, redrawn = reference(p, logits, 40).redraws[0]  # codebook 0's third 7, at step 3
    assert (first, redrawn) == (3, [0]) and columns[:3, 0].tolist() == [BOS, 7, 7] and columns[3, 0] != 7
    off = SamplingParams(seed=9, temperature=0, ras_win_len=0, max_new_tokens=40)
    frames_off, _, _ = alone(off, logits, 40)
    assert (frames_off == 7).all()


def test_stream_end_in_a_higher_codebook_ends_that_frame():
    """Stream end first in codebook 3 at step 12: frame 12 - 3 = 9 is the end frame (counting the stream-begin
    frame as 0), codebooks 0-2 end at once, frames 1..8 are kept, the row finishes at step 9 + 8 - 2 = 15."""
    p = SamplingParams(seed=1, temperature=0, ras_win_len=0, max_new_tokens=100)

    def logits(slot, t):
        x = torch.zeros(K, V)
        x[:, 100 + t] = 5.0  # a different code every step, so each frame is recognisable
        if t == 12:
            x[3, EOS] = 10.0
        return x

    sampler = BatchSampler(1, K, V, BOS, EOS, "cpu", 64)
    frames, finished_at, _ = run_ours(sampler, [0], [p], logits, 100)[0]
    assert finished_at == 15 and int(sampler.end[0]) == 9
    assert frames.shape == (8, K)
    for f in range(8):  # upstream frame f + 1 takes codebook k from step f + 1 + k
        assert frames[f].tolist() == [100 + f + 1 + k for k in range(K)]
    assert torch.equal(frames, reference(p, logits, 100).frames())


def test_non_finite_logits_flag_their_row_only():
    sampler = BatchSampler(3, K, V, BOS, EOS, "cpu", 64)
    for slot in range(3):
        p = SamplingParams(seed=slot, max_new_tokens=50)
        sampler.admit(slot, p)
        sampler.draw_noise(slot, row_generator(p, SimpleNamespace(audio_out_tail=None), "cpu"), 1)
    logits = torch.randn(3, K, V)
    logits[1, 2, 5] = float("nan")
    sel = sampler.select(torch.arange(3), logits, ras_span=7)
    assert sel.report[:, REPORT_BAD].tolist() == [0, 1, 0]


@pytest.mark.parametrize("temperature", [MIN_TEMPERATURE, 1e-3, 2.0])
@pytest.mark.parametrize("top_k, top_p", [(1, 1.0), (1026, 1e-12), (0, 1.0), (2, 0.5)])
def test_extreme_parameters_stay_finite(temperature, top_k, top_p):
    sampler = BatchSampler(1, K, V, BOS, EOS, "cpu", 64)
    p = SamplingParams(seed=3, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=50)
    sampler.admit(0, p)
    row = row_generator(p, SimpleNamespace(audio_out_tail=CLIP_CONTEXT), "cpu")
    for t in range(12):
        sampler.draw_noise(0, row, t)
        logits = torch.randn(1, K, V) * 50  # large logits: / temperature must not overflow
        sel = sampler.select(torch.tensor([0]), logits, ras_span=7)
        sampler.commit(torch.tensor([0]), sel)
        assert not sel.report[0, REPORT_BAD] and ((sel.codes >= 0) & (sel.codes < V)).all()
