"""Prefill of our own: the prompt pieces of one iteration in one forward, written straight into their slots.

The pieces are packed token after token (no padding through the linear layers); everything that depends on where a
token stands (its position, its slot, which pieces complete, which tokens are audio) is known on the host from the
prompts, so it is built there and uploaded once: the forward has no data-dependent shape and never reads a device
value back (transformers' own forward selects audio tokens with boolean masks, a host sync per layer).

Per layer, as transformers' dual-FFN decoder layer does it: text tokens take the text norms and MLP, audio tokens
(placeholders whose embeddings are their codes' summed embeddings) the audio ones; each token's keys and values are
written at its own column of its slot; attention runs per piece over its slot's columns (padded to the longest
piece only there), causal within the piece and over everything prefilled before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

INDEXES = ("ids", "positions", "slots", "piece", "offset", "text", "audio", "piece_slots", "starts", "last")


@dataclass
class Packed:
    """One iteration's pieces as index tensors, built on the host and moved to the device in one copy."""

    ids: torch.Tensor  # [T] token ids
    positions: torch.Tensor  # [T] each token's position (= its column in its slot)
    slots: torch.Tensor  # [T] each token's slot
    piece: torch.Tensor  # [T] which piece it belongs to (0..B-1)
    offset: torch.Tensor  # [T] its place within its piece
    text: torch.Tensor  # [Tt] packed indices of text tokens
    audio: torch.Tensor  # [Ta] packed indices of audio placeholders
    piece_slots: torch.Tensor  # [B]
    starts: torch.Tensor  # [B] the first position of each piece
    last: torch.Tensor  # [J] packed index of the last token of each piece that completes its prompt
    codes: torch.Tensor | None  # [Ta, codebooks] the audio placeholders' codes (delay pattern applied)
    longest: int  # tokens of the longest piece
    columns: int  # columns attention reads: the furthest any piece reaches
    from_start: bool  # every piece starts its prompt (plain causal attention, as transformers runs it)


def pack(pieces, device: torch.device) -> Packed:
    """pieces: (prompt, slot, start, stop) each, the prompt an EncodedPrompt. The indexes are plain Python lists,
    uploaded as one tensor."""
    lists = {name: [] for name in INDEXES}
    codes = []
    for b, (prompt, slot, start, stop) in enumerate(pieces):
        at = len(lists["ids"])
        lists["ids"] += prompt.input_ids[start:stop].tolist()
        before = prompt.audio_positions[start:stop + 1]  # a token is audio where the count of audio grows
        for i, (seen, after) in enumerate(zip(before, before[1:])):
            lists["audio" if after > seen else "text"].append(at + i)
        lists["positions"] += range(start, stop)
        lists["slots"] += [slot] * (stop - start)
        lists["piece"] += [b] * (stop - start)
        lists["offset"] += range(stop - start)
        lists["piece_slots"].append(slot)
        lists["starts"].append(start)
        if before[-1] > before[0]:
            codes.append(prompt.audio_ids[before[0]:before[-1]])
        if stop == prompt.input_ids.shape[0]:
            lists["last"].append(at + stop - start - 1)
    sizes = [len(lists[name]) for name in INDEXES]
    flat = torch.tensor([i for name in INDEXES for i in lists[name]], dtype=torch.long).to(device, non_blocking=True)
    indexes = dict(zip(INDEXES, flat.split(sizes)))
    return Packed(**indexes, codes=torch.cat(codes).to(device, non_blocking=True) if codes else None,
                  longest=max(p[3] - p[2] for p in pieces), columns=max(p[3] for p in pieces),
                  from_start=not any(lists["starts"]))


def _split(hidden: torch.Tensor, packed: Packed, text_fn, audio_fn) -> torch.Tensor:
    """text_fn over the text tokens, audio_fn over the audio tokens, back in packed order."""
    if packed.codes is None:
        return text_fn(hidden)
    out = torch.empty_like(hidden)
    out.index_copy_(0, packed.text, text_fn(hidden.index_select(0, packed.text)))
    out.index_copy_(0, packed.audio, audio_fn(hidden.index_select(0, packed.audio)))
    return out


def prefill(model, cache, packed: Packed) -> torch.Tensor:
    """Run the packed pieces; write their keys and values into their slots; return the audio logits of the pieces
    that complete their prompt, [J, codebooks * codebook size] (in `packed.last` order)."""
    from transformers.models.higgs_audio_v2.modeling_higgs_audio_v2 import apply_rotary_pos_emb

    inner = model.model
    hidden = inner.embed_tokens(packed.ids)  # [T, hidden]
    if packed.codes is not None:
        hidden.index_copy_(0, packed.audio, inner.embed_audio_tokens(packed.codes).to(hidden.dtype))
    cos, sin = inner.rotary_emb(hidden, packed.positions.unsqueeze(0))
    B, L = packed.piece_slots.shape[0], packed.longest
    if not packed.from_start:  # causal over the piece and everything prefilled before it
        visible = (torch.arange(packed.columns, device=hidden.device).view(1, 1, 1, -1)
                   <= (packed.starts.view(-1, 1) + torch.arange(L, device=hidden.device)).view(B, 1, L, 1))
    for index, layer in enumerate(inner.layers[: model.config.num_hidden_layers]):
        attn = layer.self_attn
        x = _split(hidden, packed, layer.input_layernorm, layer.audio_input_layernorm)
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        q = q.view(-1, q.shape[-1] // attn.head_dim, attn.head_dim).transpose(0, 1).unsqueeze(0)
        k = k.view(-1, k.shape[-1] // attn.head_dim, attn.head_dim).transpose(0, 1).unsqueeze(0)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # [1, heads, T, head_dim]
        v = v.view(-1, v.shape[-1] // attn.head_dim, attn.head_dim)
        keys, values = cache.keys[index], cache.values[index]
        keys[packed.slots, :, packed.positions] = k[0].transpose(0, 1)
        values[packed.slots, :, packed.positions] = v
        padded = q.new_zeros((B, L, q.shape[1], attn.head_dim))
        padded[packed.piece, packed.offset] = q[0].transpose(0, 1)
        padded = padded.transpose(1, 2)  # [B, heads, L, head_dim]
        span = L if packed.from_start else packed.columns
        kv = (keys[:, :, :span].index_select(0, packed.piece_slots),
              values[:, :, :span].index_select(0, packed.piece_slots))
        if packed.from_start:
            out = F.scaled_dot_product_attention(padded, *kv, is_causal=True, scale=attn.scaling, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(padded, *kv, attn_mask=visible, scale=attn.scaling, enable_gqa=True)
        out = out.transpose(1, 2)[packed.piece, packed.offset]  # [T, heads, head_dim]
        hidden = hidden + attn.o_proj(out.reshape(out.shape[0], -1))
        hidden = hidden + _split(hidden, packed, lambda h, layer=layer: layer.mlp(layer.post_attention_layernorm(h)),
                                 lambda h, layer=layer: layer.audio_mlp(layer.audio_post_attention_layernorm(h)))
    return model.audio_lm_head(inner.norm(hidden.index_select(0, packed.last)))
