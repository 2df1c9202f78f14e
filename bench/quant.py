"""Quantized weights on a device: for each --quantization, the bytes the weights take (and the README table's
estimate for the same shapes), the slots the memory plan would give, load and warm-up time, frames/s at 1 row and at --slots rows (the compiled step), and how many greedy
frames agree with the unquantized model's.

    python -m bench.quant CHECKPOINT [--device cuda] [--quantizations none,int8,fp8,int4] [--slots 32]
                          [--context 2048] [--frames 100] [--compile on|off] [--out quant.json]

For `make gpu-check` on the full-size random checkpoint (bench/gpu_check.sh's ckpt stage): about a minute per
quantization on an H100 class GPU, mostly compilation and CUDA graph capture (a short --context means fewer window
buckets to capture). A quantization the device cannot run is recorded as skipped with the reason. Prints one RESULT
line per quantization and writes them all as JSON. Runs on a CPU too (--device cpu --compile off: a dry run).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

TEXTS = ["The sun rises in the east and sets in the west.", "Hello, this is a test of the Higgs Audio server.",
         "Numbers one two three, and a longer sentence with commas, pauses, and more words in it.", "Hi."]


def rate(engine, rows: int, frames: int) -> dict:
    """Aggregate frames/s with `rows` rows of seeded sampling, `frames` frames each (the random head never ends)."""
    from model_pool.request import SamplingParams
    from tests.helpers import run_together

    params = SamplingParams(temperature=0.7, seed=1, max_new_tokens=frames + 8)
    started = time.perf_counter()
    got = run_together(engine, [(TEXTS[i % len(TEXTS)], params) for i in range(rows)])
    elapsed = time.perf_counter() - started
    made = sum(len(f) for f in got)
    return {"rows": rows, "frames": made, "seconds": round(elapsed, 3), "frames_per_s": round(made / elapsed, 1)}


def measure(checkpoint: Path, device, quantization: str, args, reference: list | None) -> dict:
    import torch

    from model_pool.engine import HiggsEngine
    from model_pool.engine.loader import load
    from model_pool.engine.memory import free_memory, plan_slots
    from model_pool.engine.quantize import estimate_bytes
    from model_pool.engine.slot_cache import SlotCache
    from model_pool.engine.voice_cache import VoiceCache
    from model_pool.errors import ModelLoadError
    from model_pool.request import SamplingParams
    from tests.helpers import run

    started = time.perf_counter()
    try:
        loaded = load(str(checkpoint / "model"), str(checkpoint / "audio_tokenizer"), device, quantization)
    except ModelLoadError as exc:
        return {"quantization": quantization, "skipped": exc.message}
    load_s = time.perf_counter() - started
    model = loaded.model
    plan = plan_slots(str(device), free_memory(device), SlotCache.bytes_per_token(model.config, model.dtype),
                      min(args.context, model.config.max_position_embeddings), weights=loaded.weights)
    started = time.perf_counter()
    engine = HiggsEngine(loaded, VoiceCache(), name=f"quant-{quantization}", max_batch_size=args.slots,
                         context_tokens=args.context, compile=args.compile == "on")
    warm_up_s = time.perf_counter() - started
    greedy = run(engine, TEXTS[0], SamplingParams(temperature=0, max_new_tokens=args.frames + 8)).tolist()
    with torch.device("meta"):  # what the README's table counts for these shapes, against what torchao stored
        estimated = estimate_bytes(type(model)(model.config), quantization, model.dtype)
    out = {"quantization": quantization, "weights": loaded.weights.as_dict(), "estimated_bytes": estimated,
           "weights_gib": round(loaded.weights.bytes / 2**30, 2), "load_s": round(load_s, 1),
           "warm_up_s": round(warm_up_s, 1), "plan_slots_at_context": plan.fit, "context": args.context,
           "rates": [rate(engine, rows, args.frames) for rows in sorted({1, args.slots})], "greedy": greedy}
    if reference is not None:
        same = sum(a == b for a, b in zip(reference, greedy))
        first = next((i for i, (a, b) in enumerate(zip(reference, greedy)) if a != b), min(len(reference), len(greedy)))
        out["greedy_vs_none"] = {"frames": len(greedy), "equal_fraction": round(same / max(1, len(greedy)), 4),
                                 "equal_prefix": first}
    if device.type == "cuda":
        out["allocated_gib"] = round(torch.cuda.memory_allocated(device) / 2**30, 2)
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del engine, loaded, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quantizations", default="none,int8,fp8,int4")
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--compile", choices=["on", "off"], default="on")
    p.add_argument("--out", default="quant.json")
    args = p.parse_args(argv)

    import torch

    device = torch.device(args.device)
    results, reference = [], None
    for quantization in args.quantizations.split(","):
        torch._dynamo.reset()  # each quantization compiles its own step
        one = measure(Path(args.checkpoint), device, quantization, args, reference)
        if quantization == "none" and "greedy" in one:
            reference = one["greedy"]
        one.pop("greedy", None)
        results.append(one)
        print(f"RESULT {quantization} = {json.dumps(one)}", flush=True)
    base = next((r for r in results if r["quantization"] == "none" and "rates" in r), None)
    if base:  # each quantization against bf16: weight bytes and frames/s, row for row
        for r in results:
            if "rates" in r and r is not base:
                r["vs_none"] = {"weights": round(r["weights"]["bytes"] / base["weights"]["bytes"], 3),
                                "frames_per_s": [round(a["frames_per_s"] / b["frames_per_s"], 3)
                                                 for a, b in zip(r["rates"], base["rates"])]}
                print(f"RESULT {r['quantization']}_vs_none = {json.dumps(r['vs_none'])}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    import os

    os._exit(code)  # the batch threads are daemons, but inductor's compile workers must not hold the exit
