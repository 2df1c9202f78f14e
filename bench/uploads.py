"""What hostile reference clips cost the server: time and worker memory for the cases issue 11 reported.

    python -m bench.uploads [--checkpoint DIR]

Starts the real server (default flags, the tiny checkpoint, CPU) and posts to /voices: a 2 s WAV at 24001 Hz, a WAV
at 999983 Hz, a 1 h silent FLAC, and a WAV whose header hides its length (40 s at 8 kHz against the 30 s limit).
Prints status, seconds and the worker's RSS growth for each, and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

from tests.harness import start_server

from .measure import build_checkpoint
from .report import machine

RESULTS = Path(__file__).resolve().parent / "results"


def _clip(seconds: float, rate: int, fmt: str = "WAV", silent: bool = False) -> bytes:
    n = int(seconds * rate)
    samples = np.zeros(n, np.float32) if silent else (0.3 * np.sin(np.arange(n) * 0.05)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _hidden_length() -> bytes:
    data = bytearray(_clip(40, 8000))
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"
    return bytes(data)


CASES = [
    ("2 s WAV at 24001 Hz", lambda: _clip(2.0, 24001)),
    ("WAV at 999983 Hz", lambda: _clip(0.05, 999983)),
    ("1 h silent FLAC at 8 kHz", lambda: _clip(3600, 8000, fmt="FLAC", silent=True)),
    ("40 s WAV with an unknown length in its header", _hidden_length),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="reuse a tiny checkpoint directory")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="higgs-uploads-"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else build_checkpoint(work / "ckpt", "tiny")
    (work / "voices").mkdir()
    server = start_server(checkpoint, work, "--voice-prompts-dir", str(work / "voices"))
    rows = []
    try:
        worker = server.worker_pids()[0]
        for name, make in CASES:
            data = make()
            before = rss_mb(worker)
            started = time.perf_counter()
            r = requests.post(f"{server.url}/voices", files={"audio": ("clip", data)},
                              data={"name": "probe", "transcript": "Words.", "overwrite": "true"}, timeout=600)
            seconds = time.perf_counter() - started
            row = {"case": name, "bytes": len(data), "status": r.status_code, "seconds": round(seconds, 3),
                   "rss_growth_mb": round(rss_mb(worker) - before, 1), "message": r.json().get("message")}
            print(f"{name} ({len(data) / 1024:.0f} KB): {r.status_code} in {seconds:.3f}s, worker RSS "
                  f"{row['rss_growth_mb']:+.1f} MB; {row['message'] or ''}", flush=True)
            rows.append(row)
    finally:
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-uploads-cpu.json"
    out.write_text(json.dumps({"machine": machine("cpu"), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
