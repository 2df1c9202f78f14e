"""The KV cache of the decode batch: fixed slots, each row's tokens stored from column 0, attention over live lengths.

Slot s holds its row's keys and values at columns 0..length-1 (its own positions), so a row's data never moves: the
prefill writes a prompt straight into its slot (prefill.py), each decode step appends one column, and a row leaves
by being forgotten. Each step writes every slot's new token at that slot's own column and attends over the first W
columns only, where W is the smallest window bucket that holds the longest live row: a step reads what the live
rows hold (rounded up to a bucket), not the whole cache. A slot that is not decoding (free, or being prefilled)
points at the spare last column, so the step's write for it lands where nobody reads. Attention is grouped-query
without expanding K/V: the query heads that share a key/value head are laid out as that head's query rows, so SDPA
reads each key once.

The step is a plain function of static buffers (allocated before any compilation and marked static), so
torch.compile traces it once with the window as its only dynamic size, and CUDA graphs can replay it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_buckets(length: int, smallest: int = 256) -> tuple[int, ...]:
    """Powers of two from `smallest`, ending with the cache length itself."""
    buckets = []
    size = smallest
    while size < length:
        buckets.append(size)
        size *= 2
    return (*buckets, length)


class SlotCache:
    def __init__(self, model, slots: int, length: int, device: torch.device, dtype: torch.dtype):
        config = model.config
        self.slots, self.length = slots, length
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        # One spare column: a window is then always a proper prefix, which keeps its size symbolic when compiled
        # (a slice as long as the whole dimension would be specialised to that constant).
        shape = (slots, self.kv_heads, length + 1, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        # Tokens held, the next write column; `length` (the spare column) while the slot is not decoding.
        self.lengths = torch.full((slots,), length, dtype=torch.long, device=device)
        self.active = torch.zeros(slots, dtype=torch.long, device=device)  # 1: the slot's length advances
        self.columns = torch.arange(length + 1, device=device)
        self.rows = torch.arange(slots, device=device)
        self.buckets = window_buckets(length)
        for t in (*self.keys, *self.values, self.lengths, self.active, self.columns, self.rows):
            torch._dynamo.mark_static_address(t)

    @staticmethod
    def bytes_per_token(config, dtype: torch.dtype) -> int:
        """Keys + values of one token of one row, over every layer."""
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        size = torch.empty((), dtype=dtype).element_size()
        return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * size

    def window(self, longest: int) -> torch.Tensor:
        """The column indices a step attends over: the smallest bucket holding `longest` tokens."""
        for size in self.buckets:
            if size >= longest:
                return self.columns[:size]
        raise ValueError(f"{longest} tokens do not fit the {self.length}-token cache")

    def start(self, slots: torch.Tensor, lengths: torch.Tensor) -> None:
        """The rows in `slots` (prefilled to `lengths` tokens) decode from the next step on."""
        self.lengths[slots] = lengths
        self.active[slots] = 1

    def release(self, slots: list[int], scrub: bool = False) -> None:
        """Forget `slots`. `scrub` zeroes them: after a row produced non-finite values, stale NaNs in its columns
        would otherwise leak into the next row's attention (a masked column still multiplies its value by 0)."""
        index = torch.tensor(slots, device=self.active.device)
        self.active[index] = 0
        self.lengths[index] = self.length
        for slot in slots if scrub else ():
            for keys, values in zip(self.keys, self.values):
                keys[slot].zero_()
                values[slot].zero_()

    def reset(self) -> None:
        self.active.zero_()
        self.lengths.fill_(self.length)
        for keys, values in zip(self.keys, self.values):
            keys.zero_()
            values.zero_()


def decode_step(model, cache: SlotCache, codes: torch.Tensor, window: torch.Tensor, slots: int | None = None,
                attend: int | None = None) -> torch.Tensor:
    """One decode step for the first `slots` slots (all by default): codes [slots, codebooks] -> logits
    [slots, codebooks * codebook size].

    Every slot writes its token's keys and values at column lengths[slot] and attends over columns 0..lengths[slot]
    within `window`; active slots then advance by one. Inactive slots compute garbage that nobody reads (their
    write lands on the spare column). The compiled step always runs every slot (one
    graph); the eager step runs only up to the highest occupied slot, which matters where each row costs compute
    (a CPU), not where a step is bound by reading the weights (a GPU). Attention runs over the first `attend` slots
    only (all by default): the others' outputs are zeros nobody reads, and their keys and values are not read.
    Each row's attention is its own, so a row's values do not depend on `attend`."""
    from transformers.models.higgs_audio_v2.modeling_higgs_audio_v2 import apply_rotary_pos_emb

    inner = model.model
    slots = cache.slots if slots is None else slots
    attend = slots if attend is None else attend
    lengths, active, rows = cache.lengths[:slots], cache.active[:slots], cache.rows[:slots]
    codes = codes[:slots]
    hidden = inner.embed_audio_tokens(codes.unsqueeze(1))  # [slots, 1, hidden]
    cos, sin = inner.rotary_emb(hidden, lengths.unsqueeze(1))
    visible = (window.unsqueeze(0) <= lengths.unsqueeze(1))[:, None, None, :]  # [slots, 1, 1, W]
    span = window.shape[0]
    for index, layer in enumerate(inner.layers[: model.config.num_hidden_layers]):
        attn = layer.self_attn
        residual = hidden
        x = layer.audio_input_layernorm(hidden)
        q = attn.q_proj(x).view(slots, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(slots, 1, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(slots, 1, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys, values = cache.keys[index][:slots], cache.values[index][:slots]
        keys[rows, :, lengths] = k[:, :, 0]
        values[rows, :, lengths] = v[:, :, 0]
        grouped = q.reshape(slots, cache.kv_heads, -1, attn.head_dim)  # the heads sharing a K/V head, as rows
        out = F.scaled_dot_product_attention(grouped[:attend], keys[:attend, :, :span], values[:attend, :, :span],
                                             attn_mask=visible[:attend], scale=attn.scaling)
        if attend is not slots:  # compiled: a symbolic size (comparing it would specialise it)
            out = grouped.new_zeros(grouped.shape).slice_scatter(out, 0, 0, attend)
        hidden = residual + attn.o_proj(out.reshape(slots, 1, -1))
        hidden = hidden + layer.audio_mlp(layer.audio_post_attention_layernorm(hidden))
    logits = model.audio_lm_head(inner.norm(hidden))[:, 0]
    lengths.add_(active)
    return logits
