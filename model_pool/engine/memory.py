"""How many batch slots fit a device: planned at load, against the memory left after the weights and the codec.

Each slot holds one row's keys and values for the whole context (prompt + max_new_tokens): on the real model
(28 layers, 8 KV heads of 128, bf16) that is 112 KiB a token, about 0.9 GiB a slot at 8192 tokens. The plan keeps
a reserve for activations (prefill chunks, logits, CUDA graph pools) and takes as many slots as fit, up to
--max-batch-size when it is given, else up to the device kind's ceiling (defaults.AUTO_MAX_SLOTS: 64 on a GPU, 8
on a CPU). Quantized weights (--quantization) leave more memory free, so more slots fit. When not even one fits,
loading stops with a message that says what to change.

`python -m model_pool.engine.memory` prints the README's memory table: the same arithmetic for the real model's
shapes (built on the meta device, nothing downloaded or allocated) and each quantization's weight layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..defaults import QUANTIZATIONS, auto_max_slots
from ..errors import ModelLoadError
from .quantize import WeightReport, estimate_bytes

log = logging.getLogger(__name__)

GIB = 1024**3
RESERVE_BYTES = {"cuda": 2 * GIB, "cpu": 1 * GIB}


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    slots: int  # per instance
    requested: int | None  # --max-batch-size; None: as many as fit, up to the device kind's ceiling
    ceiling: int  # the most slots the plan takes
    context_tokens: int
    slot_bytes: int
    free_bytes: int | None  # None: the device does not say (the ceiling is taken)
    reserve_bytes: int
    fit: int | None = None  # slots the free memory holds; None: unknown
    weights: WeightReport | None = None

    def describe(self) -> str:
        free = "unknown" if self.free_bytes is None else f"{self.free_bytes / GIB:.1f} GiB"
        if self.requested is None:
            held = "" if self.fit is None else f", {self.fit} fit"
            how = f" (--max-batch-size auto: as many as fit, at most {self.ceiling}{held})"
        else:
            how = "" if self.slots == self.requested else f" (of {self.requested} requested: that is what fits)"
        weights = f"; {self.weights.describe()}" if self.weights else ""
        return (f"{self.device}: {self.slots} batch slot(s) per instance{how}, {self.context_tokens} tokens each, "
                f"{self.slot_bytes / GIB:.2f} GiB a slot{weights}; free {free}, reserve "
                f"{self.reserve_bytes / GIB:.1f} GiB")


def plan_slots(device: str, free_bytes: int | None, token_bytes: int, context_tokens: int,
               requested: int | None = None, instances: int = 1, reserve_bytes: int | None = None,
               weights: WeightReport | None = None) -> MemoryPlan:
    """Slots per instance for `instances` instances sharing one device's `free_bytes` (measured after loading
    them: the weights as quantized are already counted). `requested` None or 0: as many as fit, up to the device
    kind's ceiling; N: at most N."""
    kind = device.split(":")[0]
    reserve = RESERVE_BYTES.get(kind, 0) if reserve_bytes is None else reserve_bytes
    requested = requested or None
    ceiling = requested or auto_max_slots(kind)
    slot_bytes = token_bytes * (context_tokens + 1)
    if free_bytes is None:
        return MemoryPlan(device, ceiling, requested, ceiling, context_tokens, slot_bytes, None, reserve,
                          weights=weights)
    fit = max(0, free_bytes - reserve) // (slot_bytes * instances)
    if fit < 1:
        smaller = ""
        if weights is not None and weights.quantization == "none" and kind == "cuda":
            smaller = ", --quantization int8 or int4 (weights in a half or a third of the memory)"
        raise ModelLoadError(
            f"not enough memory on {device} for one batch slot: {free_bytes / GIB:.1f} GiB free after loading the "
            f"model, {reserve / GIB:.1f} GiB kept in reserve, and one slot of {context_tokens} tokens needs "
            f"{slot_bytes / GIB:.2f} GiB per instance ({instances} instance(s)). Lower --max-context-tokens, use "
            f"fewer --instances-per-device{smaller}, or a device with more memory.")
    return MemoryPlan(device, int(min(ceiling, fit)), requested, ceiling, context_tokens, slot_bytes, free_bytes,
                      reserve, int(fit), weights)


def free_memory(device: torch.device) -> int | None:
    """Bytes the device can still give: CUDA's own count, the kernel's MemAvailable on a Linux CPU, else None."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.exists():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


# ---- the README's table: the plan's arithmetic for the real model's shapes ----------------------------------------
# The hub checkpoint's config.json (bosonai/higgs-audio-v2-generation-3B-base: 5.38 billion parameters).
HUB_SHAPES = {"vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
              "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "num_codebooks": 8,
              "codebook_size": 1026}
CUDA_CONTEXT_BYTES = GIB // 2  # what the CUDA context and torch's kernels take before the first allocation
# Cards by the memory CUDA reports (consumer cards' "GB" are GiB; an H100 80GB has 79.6 GiB, an H200 140.4).
CARDS = (("8 GB", 8 * GIB), ("12 GB", 12 * GIB), ("16 GB", 16 * GIB), ("24 GB", 24 * GIB), ("48 GB", 48 * GIB),
         ("80 GB", int(79.6 * GIB)), ("141 GB", int(140.4 * GIB)))


def hub_model_bytes() -> tuple[dict[str, int], int, int]:
    """({quantization: weight bytes}, codec bytes, KV bytes a token) for the real model in bf16 on a GPU, from
    models built on the meta device (transformers' audio tokenizer defaults are the hub tokenizer's shapes)."""
    from transformers import (
        HiggsAudioV2Config,
        HiggsAudioV2ForConditionalGeneration,
        HiggsAudioV2TokenizerConfig,
        HiggsAudioV2TokenizerModel,
    )

    from .slot_cache import SlotCache

    config = HiggsAudioV2Config(**HUB_SHAPES)
    with torch.device("meta"):
        model = HiggsAudioV2ForConditionalGeneration(config)
        codec = HiggsAudioV2TokenizerModel(HiggsAudioV2TokenizerConfig())
    weights = {q: estimate_bytes(model, q, torch.bfloat16) for q in QUANTIZATIONS}
    codec_bytes = sum(t.numel() * 4 for t in (*codec.parameters(), *codec.buffers()))  # float32
    return weights, codec_bytes, SlotCache.bytes_per_token(config, torch.bfloat16)


def readme_table() -> str:
    weights, codec, token = hub_model_bytes()
    reserve = RESERVE_BYTES["cuda"]

    def needs(quantization: str, slots: int, context: int) -> str:
        total = weights[quantization] + codec + reserve + slots * token * (context + 1)
        return f"{total / GIB:.1f} GiB"

    def fits(quantization: str, card: int, context: int) -> int:
        free = card - CUDA_CONTEXT_BYTES - weights[quantization] - codec
        return max(0, free - reserve) // (token * (context + 1))

    head = ["none (bf16)", "int8", "fp8", "int4"]
    rows = [["weights"] + [f"{weights[q] / GIB:.1f} GiB" for q in QUANTIZATIONS]]
    for slots, context in ((1, 4096), (1, 8192), (8, 8192), (32, 8192), (64, 8192)):
        rows.append([f"{slots} slot{'s' if slots > 1 else ''} of {context} tokens"]
                    + [needs(q, slots, context) for q in QUANTIZATIONS])
    for name, card in CARDS:
        cells = []
        for q in QUANTIZATIONS:
            long, short = fits(q, card, 8192), fits(q, card, 4096)
            cells.append("-" if short == 0 else f"{long} / {short}")
        rows.append([f"{name} card: slots at 8192 / 4096 tokens"] + cells)
    lines = ["| `--quantization` | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_table())
