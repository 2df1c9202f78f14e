"""Host work per decode step, counted on any machine: the aten ops the engine dispatches and the ones that make the
host wait for the device, with torch.profiler over every thread (the engine's loop and vocoder threads included).

    python -m bench.ops [--size tiny] [--slots 32] [--rows 1,8,32] [--frames 30] [--eager] [--device cpu]

A compiled engine of `--slots` slots (the server's shape) generates `--frames` decode steps for each of `rows`
seeded temperature-0.7 rows submitted at once, prefill included; the counts are divided by the decode steps the
engine ran. On a GPU each op is at least one kernel launch and each syncing op a stall of the host, so these counts
are what keeps a GPU busy or idle; on the CPU they are exact and repeatable. `python -m bench` prints the same row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

# Ops that read a device value on the host: each one waits for everything queued before it.
SYNCING = ("aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal")
TEXTS = ["The sun rises in the east and sets in the west.", "Hello, this is a test of the Higgs Audio server.",
         "Numbers one two three, and a longer sentence with commas, pauses, and more words in it.", "Hi."]


def build_engine(checkpoint: Path, device: str, slots: int, compile: bool, context_tokens: int = 1024):
    import torch

    from model_pool.engine import HiggsEngine
    from model_pool.engine.loader import load
    from model_pool.engine.voice_cache import VoiceCache

    loaded = load(str(checkpoint / "model"), str(checkpoint / "audio_tokenizer"), torch.device(device))
    return HiggsEngine(loaded, VoiceCache(), name="ops", max_batch_size=slots, context_tokens=context_tokens,
                       compile=compile)


def prompt_for(engine, text: str):
    from model_pool.prompt.planner import Turn, User

    return engine.encode_prompt([Turn("system", [["Generate audio following instruction."]]),
                                 Turn("user", [[User(text)]])])


def count(engine, rows: int, frames: int) -> dict:
    """Ops and syncing ops per decode step with `rows` rows submitted together (prefill included)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from model_pool.request import SamplingParams

    prompts = [prompt_for(engine, TEXTS[i % len(TEXTS)]) for i in range(rows)]
    params = [SamplingParams(temperature=0.7, seed=1000 + i, max_new_tokens=frames, min_new_tokens=frames)
              for i in range(rows)]
    for prompt, p in zip(prompts[:1], params[:1]):  # one row first: nothing of a first call is counted
        list(engine.generate(prompt, p))
    counters = engine.runner.counters
    before = counters.steps
    config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.device.type == "cuda" else [])
    with profile(activities=activities, experimental_config=config, acc_events=True) as prof:
        streams = [engine.generate(prompt, p) for prompt, p in zip(prompts, params)]
        for stream in streams:
            for _ in stream:
                pass
    steps = max(1, counters.steps - before)
    names = Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    ops = sum(names.values())
    syncs = {name: names[name] for name in SYNCING if names[name]}
    return {"rows": rows, "decode_steps": steps, "aten_ops": ops, "ops_per_step": round(ops / steps, 1),
            "syncing_ops_per_step": round(sum(syncs.values()) / steps, 3), "syncing_ops": syncs,
            "top_ops": names.most_common(8)}


def measure(checkpoint: Path, device: str = "cpu", slots: int = 32, rows: tuple[int, ...] = (1, 32),
            frames: int = 30, compile: bool = True) -> list[dict]:
    engine = build_engine(checkpoint, device, slots, compile)
    out = []
    for n in rows:
        out.append({"compiled": compile, "slots": slots, **count(engine, n, frames)})
    return out


def rows(device: str = "cpu", slots: int = 32, frames: int = 30) -> list[dict]:
    """`python -m bench`'s row (j): ops and syncing ops per decode step at 1 and `slots` rows, on a tiny checkpoint
    of its own (the count is about the engine's host work, not the model's size)."""
    from model_pool import tiny

    checkpoint = tiny.build(Path(tempfile.mkdtemp(prefix="higgs-ops-")))
    out = []
    for r in measure(checkpoint, device, slots, (1, slots), frames):
        row = {"id": f"j_{r['rows']}", "name": f"host ops per decode step, {r['rows']} row(s) of {slots} slots",
               "median_s": 0.0, "frames_per_s": None, **{k: v for k, v in r.items() if k != "top_ops"}}
        print(f"  ({row['id']}) {row['name']}: {r['ops_per_step']} ops, {r['syncing_ops_per_step']} syncing ops "
              "per step", flush=True)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=["tiny", "small", "full"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--rows", default="1,32")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--eager", action="store_true", help="the eager step instead of the compiled one")
    p.add_argument("--checkpoint", help="reuse a checkpoint directory")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from model_pool import tiny

    checkpoint = Path(args.checkpoint) if args.checkpoint else tiny.build(
        Path(tempfile.mkdtemp(prefix="higgs-ops-")), size=args.size)
    rows = tuple(int(r) for r in args.rows.split(","))
    results = measure(checkpoint, args.device, args.slots, rows, args.frames, not args.eager)
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "top_ops"}))
        print("   top:", r["top_ops"])
    if len(results) > 1:
        print(f"ops per step, {results[-1]['rows']} rows vs {results[0]['rows']}: "
              f"{results[-1]['ops_per_step'] / results[0]['ops_per_step']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
