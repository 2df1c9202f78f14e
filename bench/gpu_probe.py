"""The GPU engine, probed on a real device: compiled vs eager codes, graphs and recompiles, host syncs and transfers
per step, milliseconds per step against the batch size, and how often a seeded row's codes agree alone and batched.

    python -m bench.gpu_probe CHECKPOINT [--device cuda] [--slots 32] [--frames 150] [--out results.json]

Run by `make gpu-check` (bench/gpu_check.sh) on a GPU machine, on the full-size random checkpoint. The compiled
engine has the server's slots and context, so the benchmark's server finds its graph in the inductor cache. Prints
one RESULT line per measurement and writes them all as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RESULTS: dict = {}
TEXTS = ["The sun rises in the east and sets in the west.", "Hello, this is a test of the Higgs Audio server.",
         "Numbers one two three, and a longer sentence with commas, pauses, and more words in it.", "Hi."]


def result(name: str, value) -> None:
    RESULTS[name] = value
    print(f"RESULT {name} = {json.dumps(value, default=str)}", flush=True)


def frames_of(engine, text: str, params) -> list:
    from tests.helpers import run

    return run(engine, text, params).tolist()


def together(engine, jobs: list) -> list:
    from tests.helpers import run_together

    return [frames.tolist() for frames in run_together(engine, jobs)]


def agreement(a: list, b: list) -> dict:
    """Frames equal position by position, and how far they agree before the first difference."""
    same = sum(x == y for x, y in zip(a, b))
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {"frames": len(a), "equal_fraction": round(same / max(1, len(a)), 4), "equal_prefix": first}


def step_rate(engine, rows: int, frames: int) -> dict:
    """Aggregate frames/s and ms per step with `rows` rows generating `frames` frames each (no early end)."""
    from model_pool.request import SamplingParams

    params = SamplingParams(temperature=0.7, seed=1, max_new_tokens=frames + 8, min_new_tokens=frames + 8)
    steps_before = engine.runner.counters.steps
    started = time.perf_counter()
    together(engine, [(TEXTS[i % len(TEXTS)], params) for i in range(rows)])
    elapsed = time.perf_counter() - started
    steps = engine.runner.counters.steps - steps_before
    return {"rows": rows, "seconds": round(elapsed, 3), "steps": steps, "ms_per_step": round(1000 * elapsed / steps, 3),
            "frames_per_s": round(rows * frames / elapsed, 1)}


def syncs_per_step(engine, rows: int) -> dict:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from model_pool.request import SamplingParams

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.syncs: dict[str, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if any(s in name for s in ("_local_scalar_dense", "nonzero", "item", "is_nonzero", "equal")):
                self.syncs[name] = self.syncs.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    runner = engine.runner
    counter, original = Counter(), runner._iterate

    def iterate():
        with counter:
            original()

    runner._iterate = iterate
    steps, transfers = runner.counters.steps, runner.counters.transfers
    try:
        together(engine, [(TEXTS[i % len(TEXTS)], SamplingParams(seed=i, max_new_tokens=40, min_new_tokens=40))
                          for i in range(rows)])
    finally:
        runner._iterate = original
    steps = max(1, runner.counters.steps - steps)
    torch.cuda.synchronize()
    return {"rows": rows, "steps": steps, "host_transfers_per_step": (runner.counters.transfers - transfers) / steps,
            "syncing_ops_per_step": sum(counter.syncs.values()) / steps, "syncing_ops": counter.syncs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--device", default="cuda")
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--out", default="gpu_probe.json")
    args = p.parse_args(argv)

    import torch
    from torch._dynamo.utils import counters

    from model_pool.engine import HiggsEngine
    from model_pool.engine.loader import load
    from model_pool.engine.voice_cache import VoiceCache
    from model_pool.request import SamplingParams

    device = torch.device(args.device)
    ckpt = Path(args.checkpoint)
    started = time.perf_counter()
    loaded = load(str(ckpt / "model"), str(ckpt / "audio_tokenizer"), device)  # the first CUDA call
    result("device", {"name": torch.cuda.get_device_name(device), "load_s": round(time.perf_counter() - started, 1),
                      "free_gib": round(torch.cuda.mem_get_info(device)[0] / 2**30, 1)})
    eager = HiggsEngine(loaded, VoiceCache(), name="eager", max_batch_size=4, context_tokens=args.context)
    graphs = counters["stats"]["unique_graphs"]
    started = time.perf_counter()
    compiled = HiggsEngine(loaded, VoiceCache(), name="compiled", max_batch_size=args.slots,
                           context_tokens=args.context, compile=True)
    result("compile", {"warm_up_s": round(time.perf_counter() - started, 1),
                       "graphs_at_warm_up": counters["stats"]["unique_graphs"] - graphs,
                       "buckets": list(compiled.runner.cache.buckets),
                       "cudagraph_skips": dict(counters["inductor"]).get("cudagraph_skips", 0)})

    greedy = SamplingParams(temperature=0, max_new_tokens=args.frames + 8)
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        eager_codes = [frames_of(eager, t, greedy) for t in TEXTS]
        compiled_codes = [frames_of(compiled, t, greedy) for t in TEXTS]
        batched_codes = together(compiled, [(t, greedy) for t in TEXTS])
        seeded = [SamplingParams(seed=10 + i, max_new_tokens=args.frames + 8) for i in range(len(TEXTS))]
        seeded_alone = [frames_of(compiled, t, s) for t, s in zip(TEXTS, seeded)]
        seeded_batched = together(compiled, list(zip(TEXTS, seeded)))
    result("compiled_vs_eager_greedy", [agreement(e, c) for e, c in zip(eager_codes, compiled_codes)])
    result("compiled_batched_vs_alone_greedy", [agreement(a, b) for a, b in zip(compiled_codes, batched_codes)])
    result("compiled_batched_vs_alone_seeded", [agreement(a, b) for a, b in zip(seeded_alone, seeded_batched)])
    result("recompiles_after_warm_up", counters["stats"]["unique_graphs"] - graphs)
    result("syncs", syncs_per_step(compiled, 8))
    result("steps_eager", [step_rate(eager, rows, args.frames) for rows in (1, 4)])
    result("steps_compiled", [step_rate(compiled, rows, args.frames) for rows in (1, 8, 16, 32)
                              if rows <= args.slots])
    result("memory", {"allocated_gib": round(torch.cuda.memory_allocated(device) / 2**30, 1),
                      "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1)})
    Path(args.out).write_text(json.dumps(RESULTS, indent=2, default=str))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    import os

    os._exit(code)  # the batch threads are daemons, but inductor's compile workers must not hold the exit
