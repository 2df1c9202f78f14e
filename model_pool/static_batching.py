"""The compiled fast path (`--compile`): continuous batching over a static KV cache and a compiled decode step.

Every decode step has the same shapes ([slots, 1, codebooks] codes, a [slots, cache length] mask), so
torch.compile builds one graph (and CUDA graphs on GPUs, mode "reduce-overhead") and warms it up at load: no
request pays for compilation. Rows live in fixed batch slots. All rows write their next token at the same cache
column `t`; a joining row's prompt (prefilled eagerly, alone) is copied into the columns just before `t`, and the
attention mask says which columns each row may see. Keys carry each row's own rotary positions, so where a row's
tokens sit in the cache does not matter. When `t` reaches the end, the live columns are moved back to the start.
"""

from __future__ import annotations

import logging

import torch

from .batching import _END, BatchRunner, _Row

log = logging.getLogger(__name__)


class StaticBatchRunner(BatchRunner):
    def __init__(self, engine, max_batch_size: int = 8, max_prompt_tokens: int = 1024, max_cache_len: int = 4096,
                 compile: bool = True):
        super().__init__(engine, max_batch_size)
        from transformers import StaticCache

        e = engine
        self.reserve = max_prompt_tokens
        self.length = max(max_cache_len, max_prompt_tokens + 64)
        self.cache = StaticCache(config=e.model.config, max_batch_size=self.max_batch_size,
                                 max_cache_len=self.length)
        self.slots: list[_Row | None] = [None] * self.max_batch_size
        self.mask = torch.zeros((self.max_batch_size, self.length), dtype=torch.long, device=e.device)
        self.codes = torch.zeros((self.max_batch_size, 1, e.num_codebooks), dtype=torch.long, device=e.device)
        self.positions = torch.zeros((self.max_batch_size, 1), dtype=torch.long, device=e.device)
        self.t = self.reserve
        self.compactions = 0
        step = self._eager_step
        if compile:
            mode = "reduce-overhead" if e.device.type == "cuda" else None
            step = torch.compile(self._eager_step, mode=mode, dynamic=False)
        self._step = step
        self._warm_up()

    # ---- the decode step -------------------------------------------------------------------------------
    def _eager_step(self, codes, positions, mask):
        out = self.engine.model(audio_input_ids=codes, position_ids=positions, attention_mask=mask,
                                past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1]

    def _set_write_column(self, t: int) -> None:
        for layer in self.cache.layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.fill_(t)

    def _warm_up(self) -> None:
        """Compile (and capture) now, with every slot empty, so the first request runs at full speed."""
        with torch.inference_mode():
            for _ in range(3):
                self._run_step()
            self._reset()

    def _reset(self) -> None:
        self.mask.zero_()
        self.t = self.reserve
        self._set_write_column(self.t)

    def _run_step(self) -> torch.Tensor:
        # Empty slots attend to their own new token only (an all-masked row would give NaNs).
        for i, row in enumerate(self.slots):
            if row is None:
                self.mask[i].zero_()
        self.mask[:, self.t] = 1
        self._set_write_column(self.t)
        logits = self._step(self.codes, self.positions, self.mask)
        self.t += 1
        return logits

    # ---- batch membership ------------------------------------------------------------------------------
    def _join(self, row: _Row) -> None:
        if row.stopped():
            row.out.put(_END)
            return
        from transformers import DynamicCache

        e = self.engine
        slot = self.slots.index(None)
        length = row.prompt.input_ids.shape[0]
        if length > self.reserve:
            raise ValueError(f"prompt of {length} tokens exceeds the compiled path's {self.reserve}")
        dynamic = DynamicCache(config=e.model.config)
        out = e.prefill(row.prompt, dynamic)
        start = self.t - length  # t >= reserve >= length, always
        for static, fresh in zip(self.cache.layers, dynamic.layers):
            static.keys[slot, :, start : self.t] = fresh.keys[0]
            static.values[slot, :, start : self.t] = fresh.values[0]
        self.mask[slot].zero_()
        self.mask[slot, start : self.t] = 1
        row.logits = out.logits[0, -1].view(e.num_codebooks, e.codebook_size)
        row.position = length
        with self._cond:
            self.slots[slot] = row
            self._rows = [r for r in self.slots if r is not None]
            self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _drop_finished(self) -> None:
        changed = False
        for i, row in enumerate(self.slots):
            if row is not None and (row.stopped() or row.sampler.finished):
                row.out.put(_END)
                self.slots[i] = None
                self.mask[i].zero_()
                changed = True
        if changed:
            with self._cond:
                self._rows = [r for r in self.slots if r is not None]
                if not self._rows:
                    self._reset()

    def _clear(self) -> None:
        super()._clear()
        self.slots = [None] * self.max_batch_size
        self._reset()

    def _compact(self) -> None:
        """Move every row's live columns to the start of the cache (rarely: when the write column hits the end)."""
        live = self.mask.sum(0).nonzero()
        first = int(live[0]) if len(live) else self.t
        shift = min(first, self.t - self.reserve)
        if shift <= 0:
            raise RuntimeError("static KV cache is full: raise max_cache_len")
        for layer in self.cache.layers:
            layer.keys[:, :, : self.length - shift] = layer.keys[:, :, shift:].clone()
            layer.values[:, :, : self.length - shift] = layer.values[:, :, shift:].clone()
        self.mask[:, : self.length - shift] = self.mask[:, shift:].clone()
        self.mask[:, self.length - shift :] = 0
        self.t -= shift
        self.compactions += 1
        log.info("compacted the static KV cache by %d columns", shift)

    def _forward(self) -> None:
        e = self.engine
        if self.t >= self.length:
            self._compact()
        for i, row in enumerate(self.slots):
            if row is not None:
                self.codes[i, 0] = row.raw[-1]
                self.positions[i, 0] = row.position
        logits = self._step_logits()
        for i, row in enumerate(self.slots):
            if row is not None:
                row.logits = logits[i].view(e.num_codebooks, e.codebook_size)
                row.position += 1
        self.steps += 1

    def _step_logits(self) -> torch.Tensor:
        logits = self._run_step()
        return logits.clone()  # CUDA-graph outputs are overwritten by the next replay

