"""Per-request code selection: the delay pattern, temperature / top-k / top-p, RAS, and a private RNG.

Each request owns a torch.Generator, so its seeded output does not depend on other requests running at the same
time in other threads or in the same batch (seeding the global RNG could not promise that).

Delay pattern (as transformers' HiggsAudioV2DelayPatternLogitsProcessor): codebook k is k steps late. At step t
every codebook k >= t may only emit the stream-begin code. Once any codebook emits the stream-end code at step s,
codebooks k < t - s may only emit stream-end; the stream is over when all of them do.
"""

from __future__ import annotations

import secrets
from collections import deque

import torch

from .request import SamplingParams

NEG_INF = float("-inf")


class RowSampler:
    def __init__(self, params: SamplingParams, num_codebooks: int, bos_id: int, eos_id: int, device):
        self.params = params
        self.num_codebooks = num_codebooks
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)
        self.step = 0
        self.eos_step: int | None = None
        self.finished = False
        window = params.ras_win_len or 0
        self._history: deque[torch.Tensor] = deque(maxlen=window) if window > 0 else deque(maxlen=0)

    def _constrain(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the delay pattern and min_new_tokens to logits [codebooks, vocab] (float32, a copy)."""
        t = self.step
        if t < self.params.min_new_tokens:
            logits[:, self.eos_id] = NEG_INF
        if t < self.num_codebooks:  # codebooks t.. have not started yet: stream-begin only
            logits[t:] = NEG_INF
            logits[t:, self.bos_id] = 0.0
        if self.eos_step is not None:  # codebooks below t - eos_step have ended: stream-end only
            ended = min(t - self.eos_step, t, self.num_codebooks)
            logits[:ended] = NEG_INF
            logits[:ended, self.eos_id] = 0.0
        return logits

    def _warp(self, scores: torch.Tensor) -> torch.Tensor:
        p = self.params
        scores = scores / p.temperature
        if p.top_k and p.top_k < scores.shape[-1]:
            kth = torch.topk(scores, p.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, NEG_INF)
        if p.top_p is not None and p.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= (1.0 - p.top_p)
            drop[:, -1] = False  # always keep the most likely code
            scores = scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)
        return scores

    def _draw(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(scores.softmax(dim=-1), 1, generator=self.generator).squeeze(1)

    def choose(self, raw_logits: torch.Tensor) -> torch.Tensor:
        """raw_logits [codebooks, vocab] -> codes [codebooks] for this step."""
        logits = self._constrain(raw_logits.float().clone())
        p = self.params
        if p.temperature <= 0:
            codes = logits.argmax(dim=-1)
        else:
            codes = self._draw(self._warp(logits))
            if self._history and p.ras_win_max_num_repeat > 0:
                # RAS: a code already used ras_win_max_num_repeat times in the window is redrawn, untempered.
                window = torch.stack(tuple(self._history))
                counted = (window == codes) & (window != self.bos_id) & (window != self.eos_id)
                repeated = counted.sum(dim=0) >= p.ras_win_max_num_repeat
                if bool(repeated.any()):
                    codes = codes.clone()
                    codes[repeated] = self._draw(logits[repeated])
        self._history.append(codes)
        if self.eos_step is None and bool((codes == self.eos_id).any()):
            self.eos_step = self.step
        self.step += 1
        self.finished = bool((codes == self.eos_id).all()) or self.step >= p.max_new_tokens
        return codes

    def frame_ended(self, frame_index: int) -> bool:
        """True once frame_index reaches the stream end (its first codebook step came at or after eos)."""
        return self.eos_step is not None and frame_index + 1 >= self.eos_step
