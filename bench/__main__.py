"""Side-by-side benchmark of the library way, our engine, and the HTTP server.

    python -m bench [--size tiny|small|full] [--frames 300] [--repeats 3] [--device cpu|cuda] [--compile]

Builds a random-weight checkpoint of the chosen size (the audio head cannot pick the stream-end code, and
generation is greedy, so every run makes exactly --frames frames), then measures, medians of --repeats runs:
  (a) transformers' generate + the processor's decode, (b) our engine in-process, (c) /generate and
  (d) /generate-stream through the real gunicorn server, (e) 1/2/4/8 concurrent clients with batching on and off
  (and 4 clients on two instances), (f) a named-voice clone, uncached then cached, (g) the bare model's
  forward loop with 1 and 8 rows, and with two threads of 2 rows each: how much batching (and a second
  instance) this hardware can give at all; (h) the decode step's cost against what the rows hold; and (i) a
  realtime session fed at an LLM's pace: its first audio against /generate-stream's, and the silence heard; (j)
  the engine's host work: aten ops and syncing ops per decode step at 1 and 32 rows (bench/ops.py).
Prints a table and writes JSON with the machine description to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from . import measure
from .report import machine, print_table

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Higgs Audio server benchmark")
    p.add_argument("--size", choices=["tiny", "small", "full"], default="small")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--frames", type=int, default=300, help="audio frames per single request (25 per second)")
    p.add_argument("--concurrency-frames", type=int, default=100, help="frames per request in the load runs")
    p.add_argument("--clients", default="1,2,4,8", help="concurrency levels for (e)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also measure the compiled decode step (b')")
    p.add_argument("--servers", default=",".join(measure.SERVERS),
                   help="server layouts for (c)-(f): on (batching), off (no batching), two (two instances)")
    p.add_argument("--skip-server", action="store_true", help="only (a), (b) and (j)")
    p.add_argument("--skip-ops", action="store_true", help="leave out (j), the host ops per decode step")
    p.add_argument("--checkpoint", help="reuse a checkpoint directory built by an earlier run")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as api_server.py sets it; read when torch loads

    work = Path(tempfile.mkdtemp(prefix="higgs-bench-"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else measure.build_checkpoint(work / "ckpt", args.size)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    results: dict = {"config": vars(args), "machine": machine(args.device), "rows": []}
    rows = results["rows"]

    # On a GPU the compiled engine has the server's slots, so the server's warm-up finds its graph compiled.
    slots = max(8, *clients) if args.device.startswith("cuda") else 1
    rows += measure.in_process(checkpoint, args.device, args.frames, args.repeats, args.compile, slots)
    if not args.skip_ops:
        from . import ops

        rows += ops.rows(args.device)
    if not args.skip_server:
        servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
        rows += measure.through_server(checkpoint, work, args.device, args.frames, args.concurrency_frames,
                                       clients, args.repeats, servers)
    ratios = measure.ratios(rows)
    results["ratios"] = ratios

    print_table(results)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{stamp}-{args.size}-{results['machine']['device_kind']}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
