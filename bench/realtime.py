"""(i) Realtime sessions as a voice agent sees them: text fed at an LLM's pace (20 tokens a second, a word a token),
time from the message that completed the first sentence to its first audio, against /generate-stream's first audio
for that sentence alone (target ratio <= 1.1); and, playing the audio in real time as it arrives, the silence the
listener hears after the first audio (waiting for later sentences to be written and generated).

Part of `python -m bench` (with the batching-on server); alone, on a server of its own:
    python -m bench.realtime [--size small] [--frames 50] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
from websockets.sync.client import connect

from model_pool.request import FRAME_RATE, SAMPLE_RATE

SENTENCES = ["The first sentence arrives one word at a time.", "Then a second one follows it.",
             "And a third one closes the turn."]
TOKENS_PER_SECOND = 20.0


def _config(frames: int) -> dict:
    # Greedy without RAS, as the other rows: the random audio head never ends a stream, so every sentence makes
    # exactly `frames` frames.
    return {"type": "session.config", "instructions": "", "temperature": 0, "ras_win_len": 0,
            "max_new_tokens": frames + 8, "response_format": "pcm", "stream_audio": True, "runaway_guard": False}


def session(url: str, frames: int) -> dict:
    """One utterance of SENTENCES fed word by word; the first sentence's latency and the real-time playback gaps."""
    words = " ".join(SENTENCES).split(" ")
    completed: dict[int, float] = {}
    arrivals: list[tuple[float, int]] = []
    first_audio = None
    with connect(url.replace("http", "ws", 1) + "/v1/audio/speech/stream") as ws:
        ws.send(json.dumps(_config(frames)))

        def feed():
            sentence = 0
            for word in words:
                ws.send(json.dumps({"type": "input.text", "text": word + " "}))
                if word.endswith("."):  # this message completes a sentence
                    completed[sentence] = time.perf_counter()
                    sentence += 1
                time.sleep(1 / TOKENS_PER_SECOND)  # the LLM's pace
            ws.send(json.dumps({"type": "input.done"}))

        feeder = threading.Thread(target=feed)
        feeder.start()
        while True:
            message = ws.recv(timeout=3600)
            now = time.perf_counter()
            if isinstance(message, bytes):
                arrivals.append((now, len(message)))
                first_audio = first_audio or now
                continue
            event = json.loads(message)
            if event["type"] == "error":
                raise RuntimeError(f"session failed: {event}")
            if event["type"] == "session.done":
                break
        feeder.join()
    return {"first_audio_s": first_audio - completed[0], "gaps_s": _silence(arrivals),
            "audio_s": sum(n for _, n in arrivals) / 2 / SAMPLE_RATE}


def _silence(arrivals: list[tuple[float, int]]) -> float:
    """Seconds a listener playing each piece as soon as it arrives (after what came before) hears nothing, from the
    first audio to the last."""
    playing_until, silent = None, 0.0
    for arrived, size in arrivals:
        seconds = size / 2 / SAMPLE_RATE
        if playing_until is not None and arrived > playing_until:
            silent += arrived - playing_until
        playing_until = max(playing_until or arrived, arrived) + seconds
    return silent


def alone_first_audio(url: str, frames: int) -> float:
    body = {"text": SENTENCES[0], "scene_prompt": "", "temperature": 0, "ras_win_len": 0, "max_new_tokens": frames + 8,
            "runaway_guard": False}
    started = time.perf_counter()
    with requests.post(f"{url}/generate-stream", json=body, stream=True, timeout=3600) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: audio"):
                return time.perf_counter() - started
    raise RuntimeError("the stream sent no audio")


def rows(url: str, frames: int, repeats: int) -> list[dict]:
    session(url, frames)  # warm-up
    alone_first_audio(url, frames)
    runs, alone = [], []
    for _ in range(repeats):  # interleaved, so a drift of the machine affects both alike
        runs.append(session(url, frames))
        alone.append(alone_first_audio(url, frames))
    first = [r["first_audio_s"] for r in runs]
    gaps = [r["gaps_s"] for r in runs]
    audio = statistics.median(r["audio_s"] for r in runs)
    out = [{"id": "i_first", "name": "realtime: first sentence completed -> first audio", "median_s":
            statistics.median(first), "runs_s": first, "frames": frames},
           {"id": "i_alone", "name": "/generate-stream first audio, that sentence alone", "median_s":
            statistics.median(alone), "runs_s": alone, "frames": frames},
           {"id": "i_gaps", "name": f"realtime: silence heard in {audio:.1f}s of real-time playback",
            "median_s": statistics.median(gaps), "runs_s": gaps, "frames": int(audio * FRAME_RATE)}]
    for row in out:
        print(f"  (i) {row['name']}: {row['median_s']:.3f}s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from tests.harness import start_server

    from . import measure

    p = argparse.ArgumentParser(description="realtime session latency (bench row i)")
    p.add_argument("--size", choices=["tiny", "small", "full"], default="small")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=50, help="audio frames per sentence")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="higgs-bench-rt-"))
    checkpoint = measure.build_checkpoint(work / "ckpt", args.size)
    server = start_server(checkpoint, work, "--max-new-tokens", str(args.frames + 8), device=args.device,
                          timeout=1800)
    try:
        measured = rows(server.url, args.frames, args.repeats)
    finally:
        server.stop()
    by = {r["id"]: r for r in measured}
    print(f"realtime first audio vs /generate-stream alone (target <= 1.1): "
          f"{by['i_first']['median_s'] / by['i_alone']['median_s']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
