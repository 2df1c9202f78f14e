"""BatchSampler against a per-row reference built from what we did not write: transformers' logits warpers,
torch.multinomial with the row's generator, and the original engine's delay-pattern / stream-end state machine.

The reference consumes the row's generator the way ours does (every step, one draw when it samples, one for a RAS
redraw when RAS is on), so seeded rows must agree code for code, alone and in any batch."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from model_pool.defaults import MIN_TEMPERATURE
from model_pool.engine.sampling import REPORT_BAD, REPORT_EMIT, REPORT_FINISHED, BatchSampler
from model_pool.request import SamplingParams

BOS, EOS, K, V = 1024, 1025, 8, 1026


class ReferenceRow:
    """One row, the way the references select codes (boson's _sample_audio_tokens + transformers' warpers)."""

    def __init__(self, params: SamplingParams):
        self.p = params
        self.g = torch.Generator().manual_seed(params.seed)
        self.history: list[torch.Tensor] = []
        self.columns: list[torch.Tensor] = []
        self.num_delay, self.remaining, self.finished = 0, None, False

    def step(self, logits: torch.Tensor) -> torch.Tensor:
        p, t = self.p, len(self.columns)
        x = logits.float().clone()
        if t < p.min_new_tokens:
            x[:, EOS] = float("-inf")
        scores = x
        if p.temperature >= MIN_TEMPERATURE:
            scores = TemperatureLogitsWarper(p.temperature)(None, scores)
            if p.top_k:
                scores = TopKLogitsWarper(p.top_k)(None, scores)
            if p.top_p is not None and p.top_p < 1.0:
                scores = TopPLogitsWarper(p.top_p)(None, scores)
        greedy = p.temperature < MIN_TEMPERATURE
        codes = x.argmax(-1) if greedy else torch.multinomial(scores.softmax(-1), 1, generator=self.g).squeeze(1)
        if p.ras_win_len:
            redraw = torch.multinomial(x.softmax(-1), 1, generator=self.g).squeeze(1)
            window = self.history[-p.ras_win_len:]
            if window:
                past = torch.stack(window)
                counted = ((past == codes) & (past != BOS) & (past != EOS)).sum(0)
                codes = torch.where(counted >= p.ras_win_max_num_repeat, redraw, codes)
        # The original engine's delay pattern, applied after sampling: the first column is stream-begin only.
        if t == 0:
            codes = torch.full((K,), BOS)
        else:
            if self.num_delay + 1 < K:
                codes[self.num_delay + 1:] = BOS
                self.num_delay += 1
            if self.remaining is not None:
                codes[: K - self.remaining] = EOS
                self.remaining -= 1
            else:
                ends = (codes == EOS).nonzero()
                if len(ends):
                    lowest = int(ends[0, 0])
                    codes[:lowest] = EOS
                    self.remaining = K - lowest - 1
            if self.remaining is not None and self.remaining <= 0:
                self.finished = True
        self.history.append(codes)
        self.columns.append(codes)
        if t + 1 >= p.max_new_tokens:
            self.finished = True
        return codes

    def frames(self) -> torch.Tensor:
        """What upstream keeps: the delay pattern reverted, the first and last frames dropped, codes clipped."""
        data = torch.stack(self.columns, dim=1)  # [K, steps]
        reverted = torch.stack([data[k, k: data.shape[1] - K + 1 + k] for k in range(K)])
        return reverted[:, 1:-1].clip(0, BOS - 1).T


def run_ours(sampler: BatchSampler, slots: list[int], params: list[SamplingParams], logits_fn, steps: int):
    """Drive the batch sampler like the runner does; returns per row (frames, the step it finished at)."""
    gens = [torch.Generator().manual_seed(p.seed) for p in params]
    for slot, p in zip(slots, params):
        sampler.admit(slot, p)
    frames = {s: [] for s in slots}
    done = {}
    for t in range(steps):
        live = [i for i, s in enumerate(slots) if s not in done]
        if not live:
            break
        rows = torch.tensor([slots[i] for i in live])
        for i in live:
            sampler.draw_noise(slots[i], gens[i], params[i])
        logits = torch.stack([logits_fn(slots[i], t) for i in live])
        sel = sampler.select(rows, logits, ras_span=max(params[i].ras_win_len or 0 for i in live),
                             sampling=any(params[i].temperature >= MIN_TEMPERATURE for i in live))
        sampler.commit(rows, sel)
        for i, line in zip(live, sel.report):
            assert not line[REPORT_BAD]
            if line[REPORT_EMIT]:
                frames[slots[i]].append(line[:K].clone())
            if line[REPORT_FINISHED]:
                done[slots[i]] = t
    return {s: (torch.stack(f) if f else torch.zeros((0, K), dtype=torch.long), done.get(s)) for s, f in
            frames.items()}


def random_logits(seed: int, eos_from: int | None = None, spread: float = 3.0):
    """Deterministic logits per (seed, step); from step `eos_from` one codebook strongly prefers stream end."""

    def fn(slot, t):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        x = torch.randn(K, V, generator=g) * spread
        x[:, 7:12] += 4.0  # a few popular codes, so RAS has repeats to redraw
        if eos_from is not None and t >= eos_from:
            x[(seed + t) % K, EOS] = 30.0
        return x

    return fn


def reference(params: SamplingParams, logits_fn, steps: int):
    row = ReferenceRow(params)
    for t in range(steps):
        row.step(logits_fn(None, t))
        if row.finished:
            return row
    return row


PARAMS = [
    SamplingParams(seed=1, temperature=0.7, top_k=50, top_p=0.95, max_new_tokens=60),
    SamplingParams(seed=2, temperature=0.0, max_new_tokens=60),  # greedy: RAS still applies
    SamplingParams(seed=3, temperature=1.3, top_k=0, top_p=0.5, ras_win_len=10, ras_win_max_num_repeat=1,
                   max_new_tokens=60),
    SamplingParams(seed=4, temperature=1e-300, max_new_tokens=60),  # below the bound: greedy, never NaN
    SamplingParams(seed=5, temperature=2.0, top_k=1026, top_p=1e-9, max_new_tokens=60),
    SamplingParams(seed=6, temperature=0.9, top_k=1, ras_win_len=0, max_new_tokens=60, min_new_tokens=30),
]


@pytest.mark.parametrize("eos_from", [None, 20])
def test_batch_equals_reference_alone_and_together(eos_from):
    logit_fns = [random_logits(i + 1, eos_from) for i in range(len(PARAMS))]
    together = run_ours(BatchSampler(8, K, V, BOS, EOS, "cpu", 64), [5, 0, 3, 7, 1, 2], PARAMS,
                        lambda slot, t: logit_fns[[5, 0, 3, 7, 1, 2].index(slot)](slot, t), 80)
    for i, p in enumerate(PARAMS):
        ref = reference(p, logit_fns[i], 80)
        alone = run_ours(BatchSampler(1, K, V, BOS, EOS, "cpu", 64), [0], [p], logit_fns[i], 80)[0]
        mine = together[[5, 0, 3, 7, 1, 2][i]]
        assert torch.equal(alone[0], mine[0]) and alone[1] == mine[1], f"row {i}: batched differs from alone"
        expected = ref.frames()
        if ref.remaining is None:  # cut by max_new_tokens: upstream drops the last (complete) frame, we keep it
            assert torch.equal(mine[0][:-1], expected), f"row {i}"
        else:  # ended by the stream-end code: the same frames, and we stop no later than the reference (one step
            # earlier, unless the end came in the last codebook): its last step only completes the dropped end frame
            assert torch.equal(mine[0], expected), f"row {i}"
            assert len(ref.columns) - 2 <= mine[1] <= len(ref.columns) - 1


def test_ras_applies_after_argmax():
    """Greedy would repeat code 7 forever; RAS redraws the repeats from the untempered distribution."""
    p = SamplingParams(seed=9, temperature=0, ras_win_len=7, ras_win_max_num_repeat=2, max_new_tokens=40)

    def logits(slot, t):
        x = torch.zeros(K, V)
        x[:, 7] = 2.0
        return x

    frames, _ = run_ours(BatchSampler(1, K, V, BOS, EOS, "cpu", 64), [0], [p], logits, 40)[0]
    assert (frames != 7).any(), "RAS never redrew a repeated greedy code"
    assert torch.equal(frames[:-1], reference(p, logits, 40).frames())  # cut by max_new_tokens (see above)
    off = SamplingParams(seed=9, temperature=0, ras_win_len=0, max_new_tokens=40)
    frames_off, _ = run_ours(BatchSampler(1, K, V, BOS, EOS, "cpu", 64), [0], [off], logits, 40)[0]
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
    frames, finished_at = run_ours(sampler, [0], [p], logits, 100)[0]
    assert finished_at == 15 and int(sampler.end[0]) == 9
    assert frames.shape == (8, K)
    for f in range(8):  # upstream frame f + 1 takes codebook k from step f + 1 + k
        assert frames[f].tolist() == [100 + f + 1 + k for k in range(K)]
    assert torch.equal(frames, reference(p, logits, 100).frames())


def test_non_finite_logits_flag_their_row_only():
    sampler = BatchSampler(3, K, V, BOS, EOS, "cpu", 64)
    for slot in range(3):
        sampler.admit(slot, SamplingParams(seed=slot, max_new_tokens=50))
        sampler.draw_noise(slot, torch.Generator().manual_seed(slot), SamplingParams(seed=slot))
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
    g = torch.Generator().manual_seed(0)
    for _t in range(12):
        sampler.draw_noise(0, g, p)
        logits = torch.randn(1, K, V) * 50  # large logits: / temperature must not overflow
        sel = sampler.select(torch.tensor([0]), logits, ras_span=7)
        sampler.commit(torch.tensor([0]), sel)
        assert not sel.report[0, REPORT_BAD] and ((sel.codes >= 0) & (sel.codes < V)).all()
