"""Code selection for a whole batch at once, on the device: the delay pattern, temperature / top-k / top-p, RAS and
the stream end, with per-request randomness.

Randomness, as Boson's reference draws it (modeling_higgs_audio.py, _sample_audio_tokens): a row that samples draws
once per step with its own generator, seeded with the request's seed, from step 1 on (step 0 is the stream-begin
column, which the reference never samples). A draw is argmax(p / q) with q exponential noise from that generator,
which is what torch.multinomial does for one sample, so a seeded row gives the reference's codes for that seed, alone
or in any batch. RAS redraws take their noise from a second generator of the row (seeded from the request's seed, or
from a fixed seed when it has none), drawn every step whether or not a code is redrawn (knowing that would cost a
host sync per step): the main stream never shifts, so the codes stay the reference's up to its first redraw, where
the reference takes its redraw from the main stream.

All per-row state (step, stream end, RAS history, parameters) lives in device tensors that change only when a row
joins or starts; a step needs no host round trip. `select` is a pure function of its inputs, so a failure while
sampling can be retried row by row and pinned on the row that caused it.

Delay pattern: codebook k is k steps late. At step t every codebook k >= t may only emit the stream-begin code.
Stream end, as the original engine does it: when the stream-end code first appears at step s, in codebook k at the
lowest, frame s-k is the end frame; codebooks below k end at once, and every later code that belongs to a frame
after the end frame is the end code. Frames before the end frame are complete k + 6 steps later; the row finishes
then (upstream drops the end frame and everything after it). RAS (repetition-aware sampling), as the reference: a
code that occurs `ras_win_max_num_repeat` times among the last `ras_win_len` columns of the row's audio sequence in
its codebook is redrawn from the untempered distribution, after argmax too. That sequence starts with the prompt's
assistant audio (a reference clip, the previous chunk), stream-begin and stream-end codes included, so early in a
generation the window reaches into the prompt.
"""

from __future__ import annotations

import hashlib
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


@dataclass(frozen=True)
class Needs:
    """What the rows of a step need of `select`, known from their parameters on the host (the eager step)."""

    sampling: bool  # some row samples rather than takes the argmax
    top_k: bool
    top_p: bool
    ras_span: int  # the longest RAS window (0: RAS off for every row)

    @classmethod
    def of(cls, params: list[SamplingParams], codebook_size: int, longest_window: int) -> Needs:
        sampled = [p for p in params if p.temperature >= MIN_TEMPERATURE]
        return cls(bool(sampled), any(p.top_k and p.top_k < codebook_size for p in sampled),
                   any(p.top_p is not None and p.top_p < 1.0 for p in sampled),
                   min(longest_window, max((p.ras_win_len or 0) for p in params)))


@dataclass
class RowRandom:
    """A row's own randomness and the audio its RAS window starts with, made when the request is submitted."""

    draw: torch.Generator | None  # the sampling draws (None: greedy)
    redraw: torch.Generator | None  # RAS redraws (None: RAS off)
    context: torch.Tensor | None  # [columns, codebooks]: the prompt's trailing assistant audio, delay pattern applied


def redraw_seed(seed: int | None) -> int:
    """The RAS generator's seed: derived from the request's seed (never equal to it, so a redraw is not the draw it
    replaces), fixed when there is none (greedy requests repeat)."""
    digest = hashlib.blake2b(f"ras redraw {seed if seed is not None else 'fixed'}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def row_generator(params: SamplingParams, prompt, device: torch.device) -> RowRandom:
    """The row's generators (its seed, or a random one, for the draws) and its prompt's RAS context."""
    samples = params.temperature >= MIN_TEMPERATURE
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    return RowRandom(_generator(seed, device) if samples else None,
                     _generator(redraw_seed(params.seed), device) if params.ras_win_len else None,
                     prompt.audio_out_tail if params.ras_win_len else None)


class BatchSampler:
    """Device state for `slots` rows; `select` picks every active row's codes for one step."""

    def __init__(self, slots: int, num_codebooks: int, codebook_size: int, bos_id: int, eos_id: int,
                 device: torch.device, history: int, ahead: int = 8):
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
        self.prior = torch.zeros(slots, **long)  # prompt columns in the ring before step 0 (the RAS context)
        # Noise is drawn `ahead` steps at a time into each slot's block, outside the compiled step, which reads step
        # t's noise from column (t - 1) % ahead. On the CPU one draw of [ahead, K, V] gives the numbers of `ahead`
        # draws of [K, V] (one op per row per block); on CUDA it would not (Philox assigns numbers by the tensor's
        # size), so there the block is drawn one step at a time and the codes never depend on the block size.
        self.ahead = ahead
        self._step_by_step = torch.device(device).type != "cpu"
        noise = (slots, ahead, num_codebooks, codebook_size)
        self.draws = torch.ones(noise, dtype=torch.float32, device=device)
        self.redraws = torch.ones(noise, dtype=torch.float32, device=device)
        self._blocks = (self.draws.unbind(0), self.redraws.unbind(0))  # per-slot views, made once
        self.active = torch.zeros(slots, dtype=torch.bool, device=device)  # slots whose state a step advances
        self._slots = torch.arange(slots, device=device)
        for t in (self.step, self.end, self.history, self.temperature, self.greedy, self.top_k, self.top_p,
                  self.ras_len, self.ras_repeat, self.min_new, self.max_new, self.prior, self.draws, self.redraws,
                  self.active):
            torch._dynamo.mark_static_address(t)
        self._vocab = torch.arange(codebook_size, device=device)
        self._codebooks = torch.arange(num_codebooks, device=device)
        self._ages = torch.arange(1, self.R + 1, device=device)

    # ---- membership (host -> device, on join only) -------------------------------------------------------
    def admit(self, slot: int, params: SamplingParams) -> None:
        self.admit_many([slot], [params])

    def admit_many(self, slots: list[int], params: list[SamplingParams]) -> None:
        """Reset the state of the joining rows' slots and store their parameters: a few batched writes for all of
        them, whatever their number."""
        index = torch.tensor(slots, device=self.device)
        rows = [self._parameters(p) for p in params]
        floats = torch.tensor([r[:2] for r in rows], dtype=torch.float32).to(self.device)
        longs = torch.tensor([r[2:] for r in rows], dtype=torch.long).to(self.device)
        self.temperature[index], self.top_p[index] = floats[:, 0], floats[:, 1]
        for column, tensor in enumerate((self.top_k, self.ras_len, self.ras_repeat, self.min_new, self.max_new,
                                         self.greedy)):
            tensor[index] = longs[:, column].to(tensor.dtype)
        self.step[index] = 0
        self.end[index] = -1
        self.prior[index] = 0
        self.history[index] = 0
        self.active[index] = True

    def _parameters(self, params: SamplingParams) -> list:
        greedy = params.temperature < MIN_TEMPERATURE
        return [1.0 if greedy else params.temperature, params.top_p or 1.0, params.top_k if params.top_k else self.V,
                params.ras_win_len or 0, params.ras_win_max_num_repeat, params.min_new_tokens, params.max_new_tokens,
                int(greedy)]

    def release(self, slots: list[int]) -> None:
        self.active[torch.tensor(slots, device=self.device)] = False

    def load_context(self, slot: int, row: RowRandom) -> None:
        """The prompt's audio that the row's RAS window starts with: the ring's columns before step 0."""
        columns = 0 if row.context is None else min(row.context.shape[0], self.R)
        if columns:
            self.history[slot, self.R - columns:] = row.context[-columns:].to(self.device)
            self.prior[slot] = columns

    def draw_noise(self, slot: int, row: RowRandom, step: int) -> None:
        """The row's noise for step `step` and the `ahead - 1` steps after it, drawn when `step` opens a block:
        for the draw when it samples, for the redraw when it uses RAS. Whether a row draws depends only on its own
        parameters, so its random streams are the same in any batch. The stream-begin step (0) draws nothing, as
        the reference samples nothing there; it loads the prompt's audio that the RAS window starts with."""
        if step == 0:
            self.load_context(slot, row)
            return
        if (step - 1) % self.ahead:
            return
        for generator, block in ((row.draw, self._blocks[0][slot]), (row.redraw, self._blocks[1][slot])):
            if generator is None:
                continue
            if not self._step_by_step:  # one op for the block: on the CPU the same numbers as step by step
                block.exponential_(1.0, generator=generator)
            else:  # CUDA's Philox numbers depend on the tensor's size: one [K, V] draw a step, as the reference
                for column in block:
                    column.exponential_(1.0, generator=generator)

    def commit(self, rows: torch.Tensor, selection: Selection) -> None:
        """Store the state `select` computed for `rows` (index tensor)."""
        ring = (self.step[rows] % self.R)
        self.history[rows, ring] = selection.codes
        self.step[rows] = selection.step
        self.end[rows] = selection.end

    def advance(self, slots: int, logits: torch.Tensor, needs: Needs | None = None) -> Selection:
        """One step for the first `slots` slots at once, a fixed-shape function of tensors (the compiled decode step
        runs it inside its graph): select every slot's codes, then store the state of the active ones (the others
        compute codes nobody reads). RAS looks over the whole ring, masked to each row's own window. `needs` (the
        eager step) skips work no active row needs; a row's codes never depend on it."""
        rows = slice(0, slots)
        if needs is None:
            selection = self.select(rows, logits, self.R)
        else:
            selection = self.select(rows, logits, needs.ras_span, needs.top_k, needs.top_p, needs.sampling)
        active = self.active[rows]
        step = self.step[rows]
        ring = self._slots[rows], step % self.R
        self.history[ring] = torch.where(active.unsqueeze(1), selection.codes, self.history[ring])
        self.step[rows] = torch.where(active, selection.step, step)
        self.end[rows] = torch.where(active, selection.end, self.end[rows])
        return selection

    # ---- one step (pure) ------------------------------------------------------------------------------------
    def select(self, rows: torch.Tensor, logits: torch.Tensor, ras_span: int, use_top_k: bool = True,
               use_top_p: bool = True, sampling: bool = True) -> Selection:
        """Codes for `rows` (an index tensor, or a slice) from their logits [rows, codebooks, vocab]. Reads state,
        writes none.
        The flags skip work no row of the batch needs (`sampling`: some row samples rather than takes the argmax);
        a row's codes never depend on them."""
        K, eos, bos = self.K, self.eos, self.bos
        t, end = self.step[rows], self.end[rows]
        ids = self._slots[rows] if isinstance(rows, slice) else rows
        column = (t - 1).clamp(min=0) % self.ahead  # step t's noise (step 0 draws nothing and reads none)
        noise = (self.draws[ids, column], self.redraws[ids, column])
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
        if sampling:
            codes = self._sampled(rows, x, codes, noise, use_top_k, use_top_p, bad)

        if ras_span > 0:  # RAS over the last ras_len columns of each codebook, the prompt's context included
            ages = self._ages[:ras_span].unsqueeze(0)
            ring = (t.unsqueeze(1) - ages) % self.R  # [rows, span], newest first
            past = self.history[rows].gather(1, ring.unsqueeze(2).expand(-1, -1, K))
            live = (ages <= (t + self.prior[rows]).unsqueeze(1)) & (ages <= self.ras_len[rows].unsqueeze(1))
            counted = (past == codes.unsqueeze(1)) & live.unsqueeze(2)
            repeated = counted.sum(dim=1) >= self.ras_repeat[rows].unsqueeze(1)
            redrawn = (x.softmax(dim=-1) / noise[1]).argmax(dim=-1)
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
        scores = x / self.temperature[rows].view(-1, 1, 1)
        if use_top_k:  # exactly k codes: the best, ties to the lowest code (as argmax), so top-k = 1 is greedy
            order = scores.sort(dim=-1, descending=True, stable=True).indices
            beyond = self._vocab.view(1, 1, -1) >= self.top_k[rows].clamp(1, self.V).view(-1, 1, 1)
            scores = scores.masked_fill(beyond.expand_as(scores).scatter(-1, order, beyond.expand_as(scores)),
                                        NEG_INF)
        if use_top_p:
            ordered, order = scores.sort(dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= (1.0 - self.top_p[rows]).view(-1, 1, 1)
            drop[..., -1] = False  # always keep the most likely code
            scores = scores.masked_fill(drop.scatter(-1, order, drop), NEG_INF)
        probs = scores.softmax(dim=-1)
        bad |= ~torch.isfinite(probs).flatten(1).all(dim=1)
        drawn = (probs / noise[0]).argmax(dim=-1)
        return torch.where(self.greedy[rows].unsqueeze(1), greedy_codes, drawn)
