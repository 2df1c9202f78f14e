"""The server on a GPU through HTTP: the real gunicorn server (tests.harness.start_server), one /generate-stream
after another (first audio, frames/s), then 1, 8, 16, 32 and 64 streams at once (frames/s in total, each stream's
first audio). Greedy without RAS, so every stream is as long as asked (the frames counted are the ones that came).

    python -m bench.gpu_server CHECKPOINT [--device cuda] [--slots 64] [--levels 1,8,16,32,64] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.gpu_check import Stage, cuda_or_stop

TEXT = "The sun rises in the east and sets in the west. This simple fact has been observed for thousands of years."
FRAME_RATE = 25


def stream(url: str, frames: int) -> dict:
    """One /generate-stream: seconds to the first audio event and to the end, and the frames it carried."""
    import requests

    body = {"text": TEXT, "scene_prompt": "", "temperature": 0, "ras_win_len": 0, "max_new_tokens": frames + 8,
            "runaway_guard": False}  # the random model runs to max_new_tokens by design, past the text budget
    started = time.perf_counter()
    first, done = None, None
    with requests.post(f"{url}/generate-stream", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if first is None and line.startswith("event: audio"):
                first = time.perf_counter() - started
            elif line.startswith("data:") and '"type": "done"' in line:
                done = json.loads(line[5:])
    total = time.perf_counter() - started
    if not done or not done.get("success", True):
        raise RuntimeError(f"the stream ended without success: {done}")
    return {"first_audio_s": first, "total_s": total, "frames": round(done["duration"] * FRAME_RATE)}


def concurrent(url: str, clients: int, frames: int) -> dict:
    """`clients` streams released together: frames/s in total over the wall time, first audio median and max."""
    results: list = [None] * clients
    barrier = threading.Barrier(clients + 1)

    def work(i):
        barrier.wait()
        try:
            results[i] = stream(url, frames)
        except Exception as exc:  # noqa: BLE001 - counted below
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = [r for r in results if isinstance(r, dict)]
    errors = [f"{type(r).__name__}: {r}"[:200] for r in results if not isinstance(r, dict)]
    firsts = [r["first_audio_s"] for r in ok if r["first_audio_s"] is not None]
    return {"clients": clients, "wall_s": round(wall, 3), "frames": sum(r["frames"] for r in ok),
            "frames_per_s": round(sum(r["frames"] for r in ok) / wall, 1),
            "first_audio_s": round(statistics.median(firsts), 4) if firsts else None,
            "first_audio_max_s": round(max(firsts), 4) if firsts else None,
            "stream_frames_per_s_median": round(statistics.median(r["frames"] / r["total_s"] for r in ok), 1)
            if ok else None, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--device", default="cuda")
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--frames", type=int, default=150, help="frames of each single stream")
    p.add_argument("--level-frames", type=int, default=100, help="frames of each stream at the levels")
    p.add_argument("--levels", default="1,8,16,32,64")
    p.add_argument("--timeout", type=float, default=300, help="seconds the server may take to start")
    p.add_argument("--json", default="gpu_server.json")
    p.add_argument("--logs", help="a folder for the server's own log")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stage = Stage(args.json)
    import requests  # noqa: F401 - everything the stage uses is imported before its first CUDA call

    from tests.harness import start_server

    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="higgs-gpu-server-"))
    cuda_or_stop(stage, f"starting the server with --device {args.device} (bench/gpu_server.py)", args.device)
    started = time.perf_counter()
    longest = max(args.frames, args.level_frames) + 8
    try:
        server = start_server(Path(args.checkpoint), work, "--max-batch-size", str(args.slots), "--compile",
                              "on" if args.device.startswith("cuda") else "off", "--max-new-tokens", str(longest),
                              "--max-queue", str(4 * max(levels + [args.slots])), "--threads",
                              str(max(levels + [args.slots]) + 32), device=args.device, timeout=args.timeout)
    except Exception as exc:  # noqa: BLE001
        stage["start_error"] = f"{type(exc).__name__}: {exc}"[-3000:]
        keep_logs(work, args.logs)
        return 1
    stage["start_s"] = round(time.perf_counter() - started, 1)
    try:
        url = server.url
        stream(url, args.frames)  # warm-up: the first request's own costs stay out of the figures

        def single():
            runs = [stream(url, args.frames) for _ in range(3)]
            return {"first_audio_s": round(statistics.median(r["first_audio_s"] for r in runs), 4),
                    "first_audio_runs_s": [round(r["first_audio_s"], 4) for r in runs],
                    "frames_per_s": round(statistics.median(r["frames"] / r["total_s"] for r in runs), 1),
                    "frames": runs[0]["frames"]}

        stage.measure("stream", single)
        out: dict = {}
        for clients in levels:
            out[str(clients)] = concurrent(url, clients, args.level_frames)
            stage["levels"] = out
    finally:
        server.stop()
        keep_logs(work, args.logs)
    return 0


def keep_logs(work: Path, logs: str | None) -> None:
    """The server's own log, its last 200 KB, beside the check's other files."""
    if logs and (work / "api_server.log").exists():
        Path(logs).mkdir(parents=True, exist_ok=True)
        data = (work / "api_server.log").read_bytes()[-200_000:]
        (Path(logs) / "server_api.log").write_bytes(data + (work / "stderr.log").read_bytes()[-20_000:]
                                                     if (work / "stderr.log").exists() else data)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
