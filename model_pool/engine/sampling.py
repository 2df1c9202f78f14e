"""Code selection for a whole batch at once, on the device: the delay pattern, temperature / top-k / top-p, RAS and
the stream end, with per-request randomness.

Every row owns a torch.Generator, used only to draw its noise: exponential variates q, one set for the draw (when the
row samples) and one for a RAS redraw (when it uses RAS). Sampling is argmax(p / q), which is what torch.multinomial does for one sample, so a seeded row
gives the same codes alone or in any batch, and batching never mixes two requests' random streams.

All per-row state (step, stream end, RAS history, parameters) lives in device tensors that change only when a row
joins; a step needs no host round trip. `select` is a pure function of its inputs, so a failure while sampling
can be retried row by row and pinned on the row that caused it.

Delay pattern: codebook k is k steps late. At step t every codebook k >= t may only emit the stream-begin code.
Stream end, as the original engine does it: when the stream-end code first appears at step s, in codebook k at the
lowest, frame s-k is the end frame; codebooks below k end at once, and every later code that belongs to a frame
after the end frame is the end code. Frames before the end frame are complete k + 6 steps later; the row finishes
then (upstream drops the end frame and everything after it). RAS (repetition-aware sampling): a code already used
`ras_win_max_num_repeat` times in the row's last `ras_win_len` steps of that codebook is redrawn from the
untempered distribution; both references apply it after argmax too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

from ..defaults import MIN_TEMPERATURE
from ..request import SamplingParams

NEG_INF = float("-inf")


@dataclass
class Selection:
    codes: torch.Tensor  # [rows, codebooks]: the step's codes (fed to the next forward)
    report: torch.Tensor  # [rows, codebooks + 3]: frame codes, emit, finished, bad (one host transfer per step)
    step: torch.Tensor  # [rows] updated state
    end: torch.Tensor  # [rows]


REPORT_EMIT, REPORT_FINISHED, REPORT_BAD = -3, -2, -1


def row_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """The row's own random stream: its seed, or a random one."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return generator


class BatchSampler:
    """Device state for `slots` rows; `select` picks every active row's codes for one step."""

    def __init__(self, slots: int, num_codebooks: int, codebook_size: int, bos_id: int, eos_id: int,
                 device: torch.device, history: int):
        self.slots, self.K, self.V = slots, num_codebooks, codebook_size
        self.bos, self.eos = bos_id, eos_id
        self.device = device
        self.R = max(history, num_codebooks)  # ring of past codes: RAS windows and frame assembly
        long = dict(dtype=torch.long, device=device)
        self.step = torch.zeros(slots, **long)
        self.end = torch.full((slots,), -1, **long)
        self.history = torch.zeros((slots, self.R, num_codebooks), **long)
        self.temperature = torch.ones(slots, dtype=torch.float32, device=device)
        self.greedy = torch.zeros(slots, dtype=torch.bool, device=device)
        self.top_k = torch.full((slots,), codebook_size, **long)
        self.top_p = torch.ones(slots, dtype=torch.float32, device=device)
        self.ras_len = torch.zeros(slots, **long)
        self.ras_repeat = torch.ones(slots, **long)
        self.min_new = torch.zeros(slots, **long)
        self.max_new = torch.ones(slots, **long)
        self.noise = torch.ones((slots, 2, num_codebooks, codebook_size), dtype=torch.float32, device=device)
        self._vocab = torch.arange(codebook_size, device=device)
        self._codebooks = torch.arange(num_codebooks, device=device)
        self._ages = torch.arange(1, self.R + 1, device=device)

    # ---- membership (host -> device, on join only) -------------------------------------------------------
    def admit(self, slot: int, params: SamplingParams) -> None:
        greedy = params.temperature < MIN_TEMPERATURE
        values = {
            self.step: 0, self.end: -1, self.greedy: greedy, self.temperature: 1.0 if greedy else params.temperature,
            self.top_k: params.top_k if params.top_k else self.V, self.top_p: params.top_p or 1.0,
            self.ras_len: params.ras_win_len or 0, self.ras_repeat: params.ras_win_max_num_repeat,
            self.min_new: params.min_new_tokens, self.max_new: params.max_new_tokens,
        }
        for tensor, value in values.items():
            tensor[slot] = value
        self.history[slot] = 0

    def draw_noise(self, slot: int, generator: torch.Generator, params: SamplingParams) -> None:
        """The row's noise for one step: for the draw when it samples, for the redraw when it uses RAS. Whether a
        row draws depends only on its own parameters, so its random stream is the same in any batch."""
        if params.temperature >= MIN_TEMPERATURE:
            self.noise[slot, 0].exponential_(1.0, generator=generator)
        if params.ras_win_len:
            self.noise[slot, 1].exponential_(1.0, generator=generator)

    def commit(self, rows: torch.Tensor, selection: Selection) -> None:
        """Store the state `select` computed for `rows` (index tensor)."""
        ring = (self.step[rows] % self.R)
        self.history[rows, ring] = selection.codes
        self.step[rows] = selection.step
        self.end[rows] = selection.end

    # ---- one step (pure) ------------------------------------------------------------------------------------
    def select(self, rows: torch.Tensor, logits: torch.Tensor, ras_span: int, use_top_k: bool = True,
               use_top_p: bool = True, sampling: bool = True) -> Selection:
        """Codes for `rows` (index tensor) from their logits [rows, codebooks, vocab]. Reads state, writes none.
        The flags skip work no row of the batch needs (`sampling`: some row samples rather than takes the argmax);
        a row's codes never depend on them."""
        K, eos, bos = self.K, self.eos, self.bos
        t, end = self.step[rows], self.end[rows]
        x = logits.float()
        bad = ~torch.isfinite(x).flatten(1).all(dim=1)
        x = torch.nan_to_num(x, nan=0.0)
        x[:, :, eos] = torch.where((t < self.min_new[rows]).unsqueeze(1), NEG_INF, x[:, :, eos])
        cb = self._codebooks.unsqueeze(0)
        t1, end1 = t.unsqueeze(1), end.unsqueeze(1)
        forced = torch.where(cb >= t1, bos, torch.where((end1 >= 0) & (t1 - cb >= end1 + 1), eos, -1))
        pinned = forced.unsqueeze(2)
        x = torch.where(pinned >= 0, torch.where(self._vocab == pinned, 0.0, NEG_INF), x)

        codes = x.argmax(dim=-1)
        noise = self.noise[rows]
        if sampling:
            codes = self._sampled(rows, x, codes, noise, use_top_k, use_top_p, bad)

        if ras_span > 0:  # RAS over the last min(ras_len, step) codes of each codebook
            ages = self._ages[:ras_span]
            ring = (t.unsqueeze(1) - ages.unsqueeze(0)) % self.R  # [rows, span], newest first
            past = self.history[rows].gather(1, ring.unsqueeze(2).expand(-1, -1, K))
            live = (ages.unsqueeze(0) <= t.unsqueeze(1)) & (ages.unsqueeze(0) <= self.ras_len[rows].unsqueeze(1))
            counted = (past == codes.unsqueeze(1)) & live.unsqueeze(2) & (past != bos) & (past != eos)
            repeated = counted.sum(dim=1) >= self.ras_repeat[rows].unsqueeze(1)
            redrawn = (x.softmax(dim=-1) / noise[:, 1]).argmax(dim=-1)
            codes = torch.where(repeated, redrawn, codes)

        is_end = codes == eos
        first = (end < 0) & is_end.any(dim=1)
        lowest = is_end.int().argmax(dim=1)
        codes = torch.where(first.unsqueeze(1) & (cb < lowest.unsqueeze(1)), eos, codes)
        end = torch.where(first, t - lowest, end)

        # The frame whose last codebook arrived this step: frame t - K (0-based, the stream-begin frame excluded)
        # takes codebook k from step t - K + 1 + k. This step's codes are not in the history yet.
        frame_index = t - K
        steps_back = (K - 1) - self._codebooks  # codebook k came this many steps ago
        ring = (t.unsqueeze(1) - steps_back.unsqueeze(0)) % self.R
        past = self.history[rows].gather(1, ring.unsqueeze(2).expand(-1, -1, K)).diagonal(dim1=1, dim2=2)
        frame = torch.where(steps_back.unsqueeze(0) == 0, codes, past).clamp(0, bos - 1)
        emit = (frame_index >= 0) & ((end < 0) | (frame_index + 1 < end))
        finished = ((end >= 0) & (t >= end + K - 2)) | (t + 1 >= self.max_new[rows])
        report = torch.cat([frame, emit.unsqueeze(1), finished.unsqueeze(1), bad.unsqueeze(1)], dim=1).long()
        return Selection(codes, report, t + 1, end)

    def _sampled(self, rows, x, greedy_codes, noise, use_top_k: bool, use_top_p: bool, bad) -> torch.Tensor:
        """Temperature, top-k, top-p, then argmax(p / q); greedy rows keep their argmax. Marks non-finite rows."""
        K = self.K
        scores = x / self.temperature[rows].view(-1, 1, 1)
        if use_top_k:
            k = (self.top_k[rows].clamp(1, self.V) - 1).view(-1, 1, 1).expand(-1, K, 1)
            kth = scores.sort(dim=-1, descending=True).values.gather(-1, k)
            scores = scores.masked_fill(scores < kth, NEG_INF)
        if use_top_p:
            ordered, order = scores.sort(dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= (1.0 - self.top_p[rows]).view(-1, 1, 1)
            drop[..., -1] = False  # always keep the most likely code
            scores = scores.masked_fill(drop.scatter(-1, order, drop), NEG_INF)
        probs = scores.softmax(dim=-1)
        bad |= ~torch.isfinite(probs).flatten(1).all(dim=1)
        drawn = (probs / noise[:, 0]).argmax(dim=-1)
        return torch.where(self.greedy[rows].unsqueeze(1), greedy_codes, drawn)
