"""The Python side of `make gpu-check` (bench/gpu_check.sh): what its stages share, the full-size checkpoint built on
the GPU, and the one JSON and short summary the run ends with.

    python -m bench.gpu_check setup [--json F] [--image FREEZE]
    python -m bench.gpu_check checkpoint DIR [--size full] [--device cuda] [--json F]
    python -m bench.gpu_check report STAGES_DIR OUT_DIR [--budget 345]

Each stage writes its results to STAGES_DIR/<stage>.json. Without CUDA a stage runs up to its first CUDA call, says
where it stopped and exits with DRY_RUN: the dry run CI runs (tests/unit/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
DRY_RUN = 3  # a stage's exit status when it stopped before its first CUDA call

# The goals of the engine issue (27) on one H200, full-size architecture, random weights (docs/performance.md).
GOALS = [
    ("one stream, frames/s (HTTP)", ("server", "stream", "frames_per_s"), ">=", 500),
    ("one stream, first audio s (HTTP)", ("server", "stream", "first_audio_s"), "<=", 0.080),
    ("16 streams, frames/s in total", ("server", "levels", "16", "frames_per_s"), ">=", 4000),
    ("32 streams, frames/s in total", ("server", "levels", "32", "frames_per_s"), ">=", 8000),
    ("64 streams, frames/s in total", ("server", "levels", "64", "frames_per_s"), ">=", 12000),
    ("32 streams, first audio s (median)", ("server", "levels", "32", "first_audio_s"), "<=", 0.250),
]


class Stage:
    """A stage's results, written to its JSON as they come (a stage cut by its time cap keeps what it had)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.results: dict = {}

    def __setitem__(self, key, value) -> None:
        self.results[key] = value
        print(f"RESULT {key} = {json.dumps(value, default=str)[:2000]}", flush=True)
        self.save()

    def measure(self, key: str, fn):
        """results[key] = fn(), or the error it raised (the next measurement still runs)."""
        started = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - one failed measurement must not lose the others
            traceback.print_exc()
            value = {"error": f"{type(exc).__name__}: {exc}"[:1500]}
        self[key] = value
        print(f"  ({time.perf_counter() - started:.1f}s)", flush=True)
        return value

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.results, indent=2, default=str))


def cuda_or_stop(stage: Stage, where: str, device: str = "cuda") -> None:
    """Call before a stage's first CUDA call: without CUDA (the dry run) say where the stage stopped and exit."""
    if not str(device).startswith("cuda"):
        return
    import torch

    if torch.cuda.is_available():
        return
    stage["dry_run"] = {"stopped_before": where}
    print(f"DRY RUN: no CUDA here; stopped before the first CUDA call: {where}", flush=True)
    sys.stdout.flush()
    os._exit(DRY_RUN)


# ---- the checkpoint -----------------------------------------------------------------------------------------------
def build_checkpoint(out: Path, size: str, device: str) -> float:
    """model_pool.tiny's checkpoint with the model initialised on `device` (a GPU initialises 5 billion parameters
    in seconds; the CPU took 115 s). The tiny codec is built on the CPU as always: its generators are CPU ones.
    Returns the seconds it took."""
    import torch

    from model_pool import tiny

    started = time.perf_counter()
    original = tiny._build_model

    def on_device(*args, **kwargs):
        with torch.device(device):  # scoped to the model: the codec after it is built on the CPU
            return original(*args, **kwargs)

    tiny._build_model = on_device
    try:
        tiny.build(out, size=size)
    finally:
        tiny._build_model = original
    return time.perf_counter() - started


def checkpoint_main(args) -> int:
    stage = Stage(args.json)
    out = Path(args.dir)
    if (out / "TINY_CHECKPOINT.json").exists():
        stage["checkpoint"] = {"dir": str(out), "reused": True}
        return 0
    cuda_or_stop(stage, f"initialising the {args.size} model on {args.device} (model_pool.tiny, bench/gpu_check.py)",
                 args.device)
    try:
        seconds = build_checkpoint(out, args.size, args.device)
        stage["checkpoint"] = {"dir": str(out), "size": args.size, "built_on": args.device, "seconds": round(seconds, 1)}
    except Exception as exc:  # noqa: BLE001 - the CPU can still build it, slowly
        traceback.print_exc()
        seconds = build_checkpoint(out, args.size, "cpu")
        stage["checkpoint"] = {"dir": str(out), "size": args.size, "built_on": "cpu", "seconds": round(seconds, 1),
                               "device_error": f"{type(exc).__name__}: {exc}"[:500]}
    return 0


# ---- setup --------------------------------------------------------------------------------------------------------
def setup_main(args) -> int:
    """Versions, the GPU (when there is one), whether every requirement is met, and the image's own packages."""
    stage = Stage(args.json)
    versions = [f"python {sys.version.split()[0]}"]
    for name in ("torch", "transformers", "flask", "gunicorn", "av", "numpy", "pytest"):
        try:
            module = __import__(name)
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001 - a missing package is what this stage is for
            versions.append(f"{name} MISSING ({type(exc).__name__})")
    stage["versions"] = ", ".join(versions)
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        stage["gpu"] = {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
                        "cuda": torch.version.cuda, "free_gib": round(free / 2**30, 1),
                        "total_gib": round(total / 2**30, 1)}
    else:
        stage["gpu"] = None
    from bench.gpu_wheels import check, needed

    problems = check(needed())
    stage["requirements"] = problems or "every requirement met"
    if args.image and Path(args.image).exists():
        stage["image_packages"] = Path(args.image).read_text().split()
    return 1 if problems else 0


# ---- the report ---------------------------------------------------------------------------------------------------
def _get(data: dict, path: tuple):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def goals(results: dict) -> list[dict]:
    rows = []
    for name, path, op, target in GOALS:
        value = _get(results, path)
        met = None if not isinstance(value, int | float) else (value >= target if op == ">=" else value <= target)
        rows.append({"goal": name, "target": f"{op} {target}", "measured": value, "met": met})
    return rows


def junit(path: Path) -> dict:
    """Counts and failures from pytest's junit XML."""
    if not path.exists():
        return {"error": "no junit XML (the run was cut before pytest wrote it)"}
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or "").strip().splitlines()
                failed.append(f"{case.get('classname')}::{case.get('name')}: {message[0][:300] if message else kind}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "time_s": float(suite.get("time", 0)), "failed": failed}


def stage_times(path: Path) -> dict:
    """gpu_check.sh's line per stage: name, exit status, seconds, time cap, note."""
    stages = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, rc, seconds, cap, *note = line.split("\t") + [""]
            stages[name] = {"rc": int(rc), "seconds": int(seconds), "cap_s": int(cap), "note": note[0]}
    return stages


def report(stages_dir: Path, out: Path, budget: int) -> dict:
    results: dict = {}
    for path in sorted(stages_dir.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except ValueError as exc:
            results[path.stem] = {"error": f"unreadable: {exc}"}
    results["stages"] = stage_times(stages_dir / "stages.tsv")
    ran = results["stages"].get("tests", {}).get("rc") not in (None, DRY_RUN, 99)
    if (stages_dir / "tests.xml").exists() or ran:
        results.setdefault("tests", {}).update(junit(stages_dir / "tests.xml"))
    stopped = {name: r["dry_run"]["stopped_before"] for name, r in results.items()
               if isinstance(r, dict) and isinstance(r.get("dry_run"), dict)}
    stopped.update({name: st["note"].split("first CUDA call: ", 1)[-1] for name, st in results["stages"].items()
                    if st["rc"] == DRY_RUN and name not in stopped})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    size = _get(results, ("checkpoint", "checkpoint", "size")) or "full"
    meta = {"commit": commit.stdout.strip() or None, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "budget_s": budget, "dry_run": bool(stopped), "stopped_before_cuda": stopped,
            "checkpoint": f"model_pool.tiny --size {size}: random weights and a tiny codec"
                          + (" (the real architecture, bf16 on a GPU)" if size == "full" else "")}
    document = {"meta": meta, **results, "goals": goals(results)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(document, indent=2, default=str))
    (out / "summary.txt").write_text(summary(document))
    return document


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.0f}"
    return "-" if value is None else str(value)


def probe_lines(probe: dict) -> list[str]:
    """The probe's figures, a line each (gpu_check.json has them all)."""
    lines = []

    def line(key: str, text) -> None:
        value = probe.get(key)
        if isinstance(value, dict) and "error" in value:
            lines.append(f"probe {key}: ERROR {value['error'][:300]}")
        elif value is not None:
            try:
                lines.append(f"probe {key}: {text(value)}")
            except (KeyError, TypeError, ValueError, IndexError):
                lines.append(f"probe {key}: {json.dumps(value, default=str)[:400]}")

    line("device", lambda v: f"{v['name']}, {v['params_b']}B parameters {v['dtype']}, loaded in {v['load_s']}s")
    line("compile", lambda v: f"{v['slots']} slots x {v['context']} tokens, warm-up {v['warm_up_s']}s, "
                              f"{v['graphs_at_warm_up']} graph(s), {v['cudagraph_skips']} cudagraph skips")
    line("steps", lambda v: "; ".join(f"{r['rows']} rows {r['ms_per_step']} ms/step {r['frames_per_s']:.0f} "
                                      f"frames/s, first step {r['first_step_ms_median']} ms" for r in v))
    line("invariance", lambda v: "; ".join(
        f"{kind} alone vs batched {sum(r['equal'] for r in rows)}/{len(rows)} equal"
        + "".join(f" ({r['first_divergence']})" for r in rows if r["first_divergence"]) for kind, rows in v.items()))
    line("agreement", lambda v: "; ".join(
        f"{r['eager_argmax_fraction']:.3f} of choices the eager argmax, max gap {r['max_gap']} "
        f"(bf16 step {r['bf16_step_at_scale']}), first near-tie "
        + (f"step {r['first_near_tie']['step']} gap {r['first_near_tie']['gap']}" if r["first_near_tie"] else "none")
        for r in v))
    line("time_per_step", lambda v: "; ".join(
        f"{r['rows']} rows: wall {r['wall_ms_per_step']} ms, device busy {r.get('device_busy_ms_per_step', '-')} ms, "
        f"host gap {r.get('host_gap_ms_per_step', '-')} ms, {r['aten_ops_per_step']} aten ops, "
        f"{r.get('kernel_launches_per_step', '-')} kernel launches, {r.get('graph_launches_per_step', '-')} graph "
        f"launches, {r['syncing_ops_per_step']} syncing ops" for r in v))
    line("codec", lambda v: "; ".join(f"{k.replace('_', ' ')} {r['ms']} ms" for k, r in v.items()))
    line("recompiles_after_warm_up", str)
    line("memory", lambda v: f"{v['allocated_gib']} GiB allocated, {v['peak_gib']} GiB peak")
    return lines


def summary(doc: dict) -> str:
    meta, lines = doc["meta"], []
    lines.append(f"gpu-check at {meta['commit']} on {meta['date']} ({meta['checkpoint']})")
    setup = doc.get("setup", {})
    if setup.get("versions"):
        lines.append(f"machine: {setup['versions']}")
    for name, st in (doc.get("stages") or {}).items():
        what = {0: "ok", DRY_RUN: "dry run", 124: "TIMED OUT", 99: "skipped"}.get(st["rc"], f"rc {st['rc']}")
        lines.append(f"  stage {name}: {what} in {st['seconds']}s (cap {st['cap_s']}s) {st['note']}".rstrip())
    if meta["dry_run"]:
        lines.append("DRY RUN (no CUDA): each stage ran up to its first CUDA call and stopped there:")
        lines += [f"  {name}: before {where}" for name, where in meta["stopped_before_cuda"].items()]
    tests = doc.get("tests", {})
    if "tests" in tests:
        lines.append(f"tests/unit on the device: {tests['passed']} passed, {tests['failures']} failed, "
                     f"{tests['errors']} errors, {tests['skipped']} skipped in {tests['time_s']:.0f}s")
        lines += [f"  FAILED {f}" for f in tests["failed"][:20]]
    lines += probe_lines(doc.get("probe", {}))
    server = doc.get("server", {})
    if "stream" in server:
        s = server["stream"]
        lines.append(f"HTTP one stream: first audio {_fmt(s.get('first_audio_s'))} s, {_fmt(s.get('frames_per_s'))} "
                     f"frames/s")
    for level, row in (server.get("levels") or {}).items():
        lines.append(f"HTTP {level} streams: {_fmt(row.get('frames_per_s'))} frames/s in total, first audio "
                     f"{_fmt(row.get('first_audio_s'))} s median, {_fmt(row.get('first_audio_max_s'))} s max")
    for key in ("error", "start_error"):
        if key in server:
            lines.append(f"server {key}: {str(server[key])[-400:]}")
    if "quant" in doc:
        lines.append(f"quantization: {json.dumps(doc['quant'], default=str)[:600]}")
    lines.append("goals (issue 27): " + "; ".join(
        f"{g['goal']} {g['target']}: {_fmt(g['measured'])}{'' if g['met'] is None else (' met' if g['met'] else ' NOT met')}"
        for g in doc["goals"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("checkpoint", help="the full-size random checkpoint, built on the GPU")
    c.add_argument("dir")
    c.add_argument("--size", default="full")
    c.add_argument("--device", default="cuda")
    c.add_argument("--json", help="the stage's results file")
    s = sub.add_parser("setup", help="versions, the GPU, the requirements met")
    s.add_argument("--json", help="the stage's results file")
    s.add_argument("--image", help="the image's `pip list --format=freeze`, read before the wheels were added")
    r = sub.add_parser("report", help="one JSON and a short summary from the stages' results")
    r.add_argument("stages")
    r.add_argument("out")
    r.add_argument("--budget", type=int, default=0)
    args = p.parse_args(argv)
    if args.command == "checkpoint":
        return checkpoint_main(args)
    if args.command == "setup":
        return setup_main(args)
    doc = report(Path(args.stages), Path(args.out), args.budget)
    print((Path(args.out) / "summary.txt").read_text(), end="")
    return 0 if doc else 1


if __name__ == "__main__":
    sys.exit(main())
