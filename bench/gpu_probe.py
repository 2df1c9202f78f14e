"""The engine on a GPU, in process, through its public seams only (HiggsEngine's constructor, generate, encode_prompt,
codec.decode, runner.counters), most valuable figures first, each isolated (one that fails does not lose the rest):

  device, compile    load time, dtype, parameters; the compiled step's warm-up, graphs, cudagraph skips
  steps              ms per decode step and frames/s with 1, 8, 16, 32 and 64 rows (up to --slots)
  prefill            a prompt's time to its first step, alone and with every row joining at once
  invariance         the compiled path's codes alone and batched, greedy and seeded: equal frame for frame
  agreement          the compiled greedy codes against the eager transformers model teacher-forced on them: how
                     often a choice is the eager argmax, by how much it is not, and where the first near-tie is
                     (random weights give near-flat logits: raw frame equality between two kernels says nothing)
  time_per_step      where a step's time goes, at 1 and 32 rows (torch.profiler over every thread): wall and device
                     time per step, CUDA graph and kernel launches, copies and syncs, aten ops, the top kernels
  codec              the codec's time for a first piece and a steady piece
  recompiles, memory

    python -m bench.gpu_probe CHECKPOINT [--device cuda] [--slots 64] [--context 8192] [--frames 100] [--json F]

Run by `make gpu-check` on the full-size random checkpoint, with the server's slots and context, so the server's
compile then finds this graph in the inductor cache. `--device cpu` rehearses it on a small checkpoint.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from bench.gpu_check import Stage, cuda_or_stop

TEXTS = ["The sun rises in the east and sets in the west.", "Hello, this is a test of the Higgs Audio server.",
         "Numbers one two three, and a longer sentence with commas, pauses, and more words in it.", "Hi."]
SYNCING = ("aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal")
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
WAITS = ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize")


def greedy(frames: int):
    from model_pool.request import SamplingParams

    return SamplingParams(temperature=0, ras_win_len=0, max_new_tokens=frames + 8, min_new_tokens=frames + 8,
                          runaway_guard=False)


def seeded(seed: int, frames: int):
    from model_pool.request import SamplingParams

    return SamplingParams(seed=seed, temperature=0.7, max_new_tokens=frames + 8, min_new_tokens=frames + 8,
                          runaway_guard=False)


def generate(engine, text: str, params, first: list | None = None):
    """The frames of one generation; the seconds to its first step appended to `first`."""
    from tests.helpers import frames, msgs

    started = time.perf_counter()
    steps = engine.generate(engine.encode_prompt(msgs(text)), params)

    def timed():
        for i, step in enumerate(steps):
            if i == 0 and first is not None:
                first.append(time.perf_counter() - started)
            yield step

    return frames(timed())


def together(engine, jobs: list, first: list | None = None) -> list:
    from tests.helpers import at_once

    return at_once([lambda job=job: generate(engine, *job, first=first) for job in jobs], timeout=600)


def step_rate(engine, rows: int, frames: int) -> dict:
    """rows seeded rows submitted at once, `frames` frames each: ms per decode step, frames/s in total, and each
    row's time to its first step (its prefill, with the others', and one step)."""
    counters = engine.runner.counters
    before, first = counters.steps, []
    started = time.perf_counter()
    together(engine, [(TEXTS[i % len(TEXTS)], seeded(i, frames)) for i in range(rows)], first)
    elapsed = time.perf_counter() - started
    steps = max(1, counters.steps - before)
    return {"rows": rows, "seconds": round(elapsed, 3), "steps": steps,
            "ms_per_step": round(1000 * elapsed / steps, 2), "frames_per_s": round(rows * frames / elapsed, 1),
            "first_step_ms_median": round(1000 * statistics.median(first), 1),
            "first_step_ms_max": round(1000 * max(first), 1)}


def invariance(engine, frames: int) -> dict:
    """A row's codes alone and with the others: the compiled step runs every slot whatever the batch."""
    from tests.unit.agreement import first_divergence

    out = {}
    for label, params in (("greedy", [greedy(frames)] * len(TEXTS)),
                          ("seeded", [seeded(10 + i, frames) for i in range(len(TEXTS))])):
        alone = [generate(engine, t, p) for t, p in zip(TEXTS, params)]
        batched = together(engine, list(zip(TEXTS, params)))
        rows = []
        for a, b in zip(alone, batched):
            parted = first_divergence(a, b) if a.shape == b.shape else "lengths differ"
            rows.append({"frames": int(a.shape[0]), "equal": bool(a.shape == b.shape and bool((a == b).all())),
                         "first_divergence": str(parted) if parted else None})
        out[label] = rows
    return out


def agreement(engine, loaded, frames: int) -> list[dict]:
    """Each text's compiled greedy codes, and the eager transformers model teacher-forced on them: at every step
    the compiled choice's distance below the eager model's best logit (0 where it is the eager argmax)."""
    import torch

    from tests.helpers import msgs
    from tests.unit.agreement import columns, teacher_forced_logits

    rows = []
    for text in TEXTS:
        got = generate(engine, text, greedy(frames))
        prompt = engine.encode_prompt(msgs(text))
        steps = got.shape[0] + 1
        fed = columns(got, steps)
        logits = teacher_forced_logits(loaded.model, prompt, fed[:-1])  # steps 0 .. steps-1
        gaps, first = [], None
        for t in range(1, steps):
            for k in range(min(t, fed.shape[1])):
                row = logits[t, k]
                gap = float(row.max() - row[fed[t, k]])
                gaps.append(gap)
                if gap > 0 and first is None:
                    first = {"step": t, "codebook": k, "gap": round(gap, 5),
                             "second_best_gap": round(float(row.topk(2).values.diff().abs()), 5)}
        gaps_t = torch.tensor(gaps)
        scale = float(logits[1:].abs().max())
        rows.append({"prompt_tokens": int(prompt.input_ids.shape[0]), "choices": len(gaps),
                     "eager_argmax_fraction": round(float((gaps_t == 0).float().mean()), 4),
                     "max_gap": round(float(gaps_t.max()), 5),
                     "median_gap_where_not_argmax": round(float(gaps_t[gaps_t > 0].median()), 5)
                     if bool((gaps_t > 0).any()) else 0.0,
                     "first_near_tie": first, "logit_scale": round(scale, 3),
                     "bf16_step_at_scale": 2.0 ** (int(torch.tensor(scale).log2().floor()) - 7) if scale else None})
    return rows


def time_per_step(engine, rows: int, frames: int) -> dict:
    """torch.profiler over every thread while `rows` rows generate `frames` frames: per decode step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = engine.device.type == "cuda"
    counters = engine.runner.counters
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    before = counters.steps
    started = time.perf_counter()
    with profile(activities=activities, experimental_config=config) as prof:
        together(engine, [(TEXTS[i % len(TEXTS)], seeded(100 + i, frames)) for i in range(rows)])
        if cuda:
            torch.cuda.synchronize(engine.device)
    wall = time.perf_counter() - started
    steps = max(1, counters.steps - before)
    averages = prof.key_averages()

    def device_us(avg, own=True):
        name = "self_device_time_total" if own else "device_time_total"
        return getattr(avg, name, None) or getattr(avg, name.replace("device", "cuda"), 0) or 0

    calls = {a.key: a.count for a in averages}
    aten = {a.key: a for a in averages if a.key.startswith("aten::")}
    kernels = sorted((a for a in averages if device_us(a) > 0 and not a.key.startswith(("aten::", "cuda", "cu"))),
                     key=device_us, reverse=True)
    busy_us = sum(device_us(a) for a in kernels)
    graph_us = sum(device_us(a, own=False) for a in averages if a.key == "cudaGraphLaunch")
    per = 1.0 / steps
    out = {"rows": rows, "steps": steps, "wall_ms_per_step": round(1000 * wall * per, 3),
           "aten_ops_per_step": round(sum(a.count for a in aten.values()) * per, 1),
           "syncing_ops_per_step": round(sum(calls.get(n, 0) for n in SYNCING) * per, 3),
           "aten_cpu_ms_per_step": round(sum(a.self_cpu_time_total for a in aten.values()) / 1000 * per, 3),
           "top_aten_by_cpu": [(a.key, round(a.self_cpu_time_total / 1000 * per, 3), round(a.count * per, 1))
                               for a in sorted(aten.values(), key=lambda a: a.self_cpu_time_total,
                                               reverse=True)[:8]]}
    if cuda:
        out.update({
            "device_busy_ms_per_step": round(busy_us / 1000 * per, 3),
            "host_gap_ms_per_step": round(1000 * wall * per - busy_us / 1000 * per, 3),
            "graph_device_ms_per_step": round(graph_us / 1000 * per, 3) if graph_us else None,
            "graph_launches_per_step": round(calls.get("cudaGraphLaunch", 0) * per, 2),
            "kernel_launches_per_step": round(sum(calls.get(n, 0) for n in LAUNCHES) * per, 1),
            "copies_per_step": round(calls.get("cudaMemcpyAsync", 0) * per, 2),
            "host_waits_per_step": round(sum(calls.get(n, 0) for n in WAITS) * per, 2),
            "top_kernels_by_device": [(a.key[:90], round(device_us(a) / 1000 * per, 3), round(a.count * per, 1))
                                      for a in kernels[:8]]})
    return out


def codec(engine) -> dict:
    """engine.codec.decode of a first piece (2 frames and 10 of look-ahead) and of 48 frames, 5 times each."""
    import torch

    g = torch.Generator().manual_seed(0)
    out = {}
    for n in (12, 48):
        frames = torch.randint(0, 1024, (n, 8), generator=g)
        engine.codec.decode(frames)  # warm-up (cuDNN picks its algorithms)
        started = time.perf_counter()
        for _ in range(5):
            engine.codec.decode(frames)  # returns host samples: the device work is done
        ms = 1000 * (time.perf_counter() - started) / 5
        out[f"{n}_frames"] = {"ms": round(ms, 2), "frames_per_s": round(n / ms * 1000, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--device", default="cuda")
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--json", default="gpu_probe.json")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stage = Stage(args.json)

    import torch
    import torch.profiler  # noqa: F401 - everything the probe uses is imported before its first CUDA call
    from torch._dynamo.utils import counters as dynamo

    import tests.helpers  # noqa: F401
    import tests.unit.agreement  # noqa: F401
    from model_pool.engine import HiggsEngine
    from model_pool.engine.loader import load
    from model_pool.engine.voice_cache import VoiceCache

    cuda_or_stop(stage, f"loading {args.checkpoint} onto {args.device} (bench/gpu_probe.py)", args.device)
    device, checkpoint = torch.device(args.device), Path(args.checkpoint)
    cuda = device.type == "cuda"
    held: dict = {}

    def load_model():
        started = time.perf_counter()
        held["loaded"] = load(str(checkpoint / "model"), str(checkpoint / "audio_tokenizer"), device)
        model = held["loaded"].model
        return {"name": torch.cuda.get_device_name(device) if cuda else "cpu",
                "load_s": round(time.perf_counter() - started, 1), "dtype": str(model.dtype),
                "params_b": round(sum(x.numel() for x in model.parameters()) / 1e9, 3),
                "free_gib": round(torch.cuda.mem_get_info(device)[0] / 2**30, 1) if cuda else None}

    if "error" in stage.measure("device", load_model):
        return 1
    loaded = held["loaded"]

    def build():
        graphs, started = dynamo["stats"]["unique_graphs"], time.perf_counter()
        held["engine"] = HiggsEngine(loaded, VoiceCache(), name="probe", max_batch_size=args.slots,
                                     context_tokens=args.context, compile=True)
        return {"slots": args.slots, "context": args.context, "warm_up_s": round(time.perf_counter() - started, 1),
                "graphs_at_warm_up": dynamo["stats"]["unique_graphs"] - graphs,
                "cudagraph_skips": dict(dynamo["inductor"]).get("cudagraph_skips", 0)}

    if "error" in stage.measure("compile", build):
        return 1
    engine = held["engine"]
    graphs = dynamo["stats"]["unique_graphs"]
    frames = args.frames
    stage.measure("steps", lambda: [step_rate(engine, rows, frames) for rows in (1, 8, 16, 32, 64)
                                    if rows <= args.slots])
    stage.measure("invariance", lambda: invariance(engine, frames))
    stage.measure("agreement", lambda: agreement(engine, loaded, frames))
    stage.measure("time_per_step", lambda: [time_per_step(engine, rows, 40)
                                            for rows in sorted({min(32, args.slots), 1}, reverse=True)])
    stage.measure("codec", lambda: codec(engine))
    stage.measure("recompiles_after_warm_up", lambda: dynamo["stats"]["unique_graphs"] - graphs)
    if cuda:
        stage.measure("memory", lambda: {"allocated_gib": round(torch.cuda.memory_allocated(device) / 2**30, 1),
                                         "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1)})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # the engine's threads are daemons, but inductor's compile workers must not hold the exit
