"""Boson AI's code selection (boson-multimodal 0.1.1, modeling_higgs_audio.py: _sample with _sample_audio_tokens),
rewritten as the tests' reference: transformers' logits warpers, torch.multinomial on one torch.Generator(seed) in
upstream's order (nothing at the stream-begin step, then one draw per step, and a RAS redraw from the same generator
only for the codebooks it redraws), RAS over the last columns of the audio-out sequence (the prompt's assistant
audio, then this generation's columns, every code counted), and upstream's delay-pattern / stream-end handling.

The draws happen on the logits' device with a generator there (on a GPU, upstream's torch.multinomial draws from the
GPU's generator), the bookkeeping on the CPU; `logits` keeps what each step selected from, for comparisons that
judge a near-tie (agreement.py)."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from model_pool.defaults import MIN_TEMPERATURE
from model_pool.request import SamplingParams

BOS, EOS, K, V = 1024, 1025, 8, 1026


def delayed(codes: torch.Tensor) -> torch.Tensor:
    """A clip's codes [frames, K] as the prompt holds them: stream begin + codes + stream end, codebook k k steps
    late (stream begin before, stream end after): [frames + K + 1, K]."""
    seq = torch.cat([torch.full((1, K), BOS), codes, torch.full((1, K), EOS)])
    out = torch.full((seq.shape[0] + K - 1, K), EOS)
    for k in range(K):
        out[:k, k] = BOS
        out[k:k + seq.shape[0], k] = seq[:, k]
    return out


class ReferenceRow:
    """One row as Boson's code selects codes; `context` is the prompt's audio-out sequence (its RAS window start)."""

    def __init__(self, params: SamplingParams, context: torch.Tensor | None = None):
        self.p = params
        self.g: torch.Generator | None = None  # made on the logits' device at the first draw, seeded with the seed
        self.logits: dict[int, torch.Tensor] = {}  # step -> the logits it selected from (float32, on the CPU)
        self.audio_out = list(context) if context is not None else []
        self.columns: list[torch.Tensor] = []
        self.num_delay, self.remaining, self.finished = 0, None, False
        self.redraws: list[tuple[int, list[int]]] = []  # (step, codebooks redrawn)
        self.candidates: dict[int, torch.Tensor] = {}  # step -> the codes drawn before that step's redraw

    def step(self, logits: torch.Tensor) -> torch.Tensor:
        p, t = self.p, len(self.columns)
        if t == 0:  # AUDIO_INIT: the stream-begin column, nothing sampled
            codes = torch.full((K,), BOS)
            self.audio_out.append(codes)
            self.columns.append(codes)
            return codes
        x = logits.float().clone()
        self.logits[t] = x.cpu()
        if t < p.min_new_tokens:
            x[:, EOS] = float("-inf")
        greedy = p.temperature < MIN_TEMPERATURE
        if greedy:
            codes = x.argmax(-1).cpu()
        else:
            scores = TemperatureLogitsWarper(p.temperature)(None, x)
            if p.top_k:
                scores = TopKLogitsWarper(p.top_k)(None, scores)
            if p.top_p is not None and p.top_p < 1.0:
                scores = TopPLogitsWarper(p.top_p)(None, scores)
            codes = torch.multinomial(scores.softmax(-1), 1, generator=self._generator(x.device)).squeeze(1).cpu()
        if p.ras_win_len:
            window = torch.stack(self.audio_out[-p.ras_win_len:], dim=1)  # [K, columns]
            rows = torch.nonzero((window == codes.unsqueeze(1)).sum(dim=1) >= p.ras_win_max_num_repeat).squeeze(1)
            if len(rows):
                self.redraws.append((t, rows.tolist()))
                self.candidates[t] = codes.clone()
            redrawn = x[rows.to(x.device)].softmax(-1).multinomial(1, replacement=True,
                                                                   generator=self._generator(x.device))
            codes[rows] = redrawn.squeeze(1).cpu()
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
        self.audio_out.append(codes)
        self.columns.append(codes)
        if t + 1 >= p.max_new_tokens:
            self.finished = True
        return codes

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.g is None:
            self.g = torch.Generator(device=device)
            self.g.manual_seed(self.p.seed)
        return self.g

    def frames(self) -> torch.Tensor:
        """What upstream keeps: the delay pattern reverted, the first and last frames dropped, codes clipped."""
        data = torch.stack(self.columns, dim=1)  # [K, steps]
        reverted = torch.stack([data[k, k: data.shape[1] - K + 1 + k] for k in range(K)])
        return reverted[:, 1:-1].clip(0, BOS - 1).T


def reference(params: SamplingParams, logits_fn, steps: int, context=None) -> ReferenceRow:
    row = ReferenceRow(params, context)
    for t in range(steps):
        row.step(logits_fn(None, t))
        if row.finished:
            break
    return row
