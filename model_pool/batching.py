"""Continuous batching inside one engine instance.

A decode step reads every weight once whatever the batch size, so decoding 8 requests together costs little more
than 1. One thread per instance runs the decode loop over a batch of rows. A request joins at the next step
boundary (its prompt is prefilled alone, then its KV cache is merged into the batch's, left-padded); a finished or
cancelled row leaves at once. Rows never share randomness: each has its own sampler and generator, so a seeded
request gives the same audio alone or in any batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .request import SamplingParams
from .sampling import RowSampler

log = logging.getLogger(__name__)

_END = object()


@dataclass
class Step:
    index: int  # 0-based decode step (the number of generated tokens is index + 1)
    frame: torch.Tensor | None  # a complete frame [codebooks] (delay reverted), when one completed this step


@dataclass
class _Row:
    prompt: object  # EncodedPrompt
    params: SamplingParams
    cancel: threading.Event | None
    sampler: RowSampler
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: threading.Event = field(default_factory=threading.Event)
    raw: list = field(default_factory=list)
    logits: torch.Tensor | None = None  # [codebooks, vocab] for the next choice
    position: int = 0  # position id of the next input token

    def stopped(self) -> bool:
        return self.abandoned.is_set() or (self.cancel is not None and self.cancel.is_set())


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [missing, 0]
    return F.pad(t, pad)


class BatchRunner:
    def __init__(self, engine, max_batch_size: int = 8):
        self.engine = engine
        self.max_batch_size = max(1, max_batch_size)
        self._pending: deque[_Row] = deque()
        self._cond = threading.Condition()
        self._rows: list[_Row] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # [rows, cache length]: 1 real token, 0 left padding
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode steps run (batched forwards), for tests and benchmarks
        self.max_rows_seen = 0

    # ---- request side ----------------------------------------------------------------------------------
    def submit(self, prompt, params: SamplingParams, cancel: threading.Event | None = None) -> Iterator[Step]:
        e = self.engine
        row = _Row(prompt, params, cancel, RowSampler(params, e.num_codebooks, e.bos_id, e.eos_id, e.device))
        with self._cond:
            self._pending.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"batch-{e.name}", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            while True:
                item = row.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if row.stopped():
                    return  # the runner drops the row at its next step boundary
        finally:
            row.abandoned.set()

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._rows) + len(self._pending)

    # ---- decode loop -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._rows:
                    self._cond.wait()
                joining = []
                while self._pending and len(self._rows) + len(joining) < self.max_batch_size:
                    joining.append(self._pending.popleft())
            try:
                with torch.inference_mode():
                    for row in joining:
                        self._join(row)
                    self._choose_and_emit()
                    self._drop_finished()
                    if self._rows:
                        self._forward()
            except BaseException as exc:  # noqa: BLE001 - every waiting request must hear about it
                log.exception("batch step failed on %s", self.engine.name)
                with self._cond:
                    for row in self._rows + joining:
                        row.out.put(exc)
                    self._clear()

    def _clear(self) -> None:
        self._rows, self._cache, self._mask = [], None, None

    def _join(self, row: _Row) -> None:
        if row.stopped():
            row.out.put(_END)
            return
        from transformers import DynamicCache

        e = self.engine
        cache = DynamicCache(config=e.model.config)
        out = e.prefill(row.prompt, cache)
        row.logits = out.logits[0, -1].view(e.num_codebooks, e.codebook_size)
        length = row.prompt.input_ids.shape[0]
        row.position = length
        mask = torch.ones((1, length), dtype=torch.long, device=e.device)
        with self._cond:
            if not self._rows:
                self._cache, self._mask = cache, mask
            else:
                total = max(self._mask.shape[1], length)
                for mine, theirs in zip(self._cache.layers, cache.layers):
                    mine.keys = torch.cat([_left_pad(mine.keys, total, 2), _left_pad(theirs.keys, total, 2)])
                    mine.values = torch.cat([_left_pad(mine.values, total, 2), _left_pad(theirs.values, total, 2)])
                self._mask = torch.cat([_left_pad(self._mask, total, 1), _left_pad(mask, total, 1)])
            self._rows.append(row)
            self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _choose_and_emit(self) -> None:
        e = self.engine
        delay = e.num_codebooks - 1
        for row in self._rows:
            if row.stopped():
                continue
            codes = row.sampler.choose(row.logits)
            row.raw.append(codes)
            step = row.sampler.step - 1
            index = step - 1 - delay  # the frame whose last codebook arrived this step
            frame = None
            if index >= 0 and not row.sampler.frame_ended(index):
                frame = torch.stack([row.raw[index + 1 + k][k] for k in range(e.num_codebooks)])
                frame = frame.clamp(0, e.bos_id - 1).cpu()
            row.out.put(Step(step, frame))

    def _drop_finished(self) -> None:
        keep = []
        for i, row in enumerate(self._rows):
            if row.stopped() or row.sampler.finished:
                row.out.put(_END)
            else:
                keep.append(i)
        if len(keep) == len(self._rows):
            return
        with self._cond:
            self._rows = [self._rows[i] for i in keep]
            if not self._rows:
                self._cache, self._mask = None, None
                return
            index = torch.tensor(keep, device=self._mask.device)
            self._mask = self._mask.index_select(0, index)
            # Columns that are padding for every remaining row are dead weight: cut them.
            first = int((self._mask.sum(0) > 0).nonzero()[0])
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys = layer.keys.index_select(0, index)[:, :, first:]
                layer.values = layer.values.index_select(0, index)[:, :, first:]

    def _forward(self) -> None:
        e = self.engine
        codes = torch.stack([row.raw[-1] for row in self._rows]).unsqueeze(1)  # [rows, 1, codebooks]
        positions = torch.tensor([[row.position] for row in self._rows], device=e.device)
        ones = torch.ones((len(self._rows), 1), dtype=self._mask.dtype, device=self._mask.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        out = e.model(audio_input_ids=codes, attention_mask=self._mask, position_ids=positions,
                      past_key_values=self._cache, use_cache=True)
        logits = out.logits[:, -1].view(len(self._rows), e.num_codebooks, e.codebook_size)
        for i, row in enumerate(self._rows):
            row.logits = logits[i]
            row.position += 1
        self.steps += 1
