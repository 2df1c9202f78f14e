"""Check a running Higgs Audio server (the spec's test client).

    python test_client.py                      # all tests
    python test_client.py --test basic
    python test_client.py --test voice-clone
    python test_client.py --test streaming
    python test_client.py --url http://localhost:8000

Saves the audio it receives under test_outputs/, prints a pass/fail summary, exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import requests

OUT = Path("test_outputs")
TESTS = ("basic", "voice-clone", "streaming")


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def check_status(r: requests.Response, what: str) -> None:
    """A 200, or a failure that shows the body. The body is read only on failure: reading it first would wait for a
    stream's whole generation."""
    if r.status_code != 200:
        raise CheckFailed(f"{what} answered {r.status_code}: {r.text[:300]}")


def wav_info(data: bytes) -> tuple[int, int, float]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnchannels(), w.getnframes() / w.getframerate()


def save(name: str, data: bytes) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / name
    path.write_bytes(data)
    return path


def test_basic(client: requests.Session, url: str, max_new_tokens: int) -> str:
    info = client.get(f"{url}/info", timeout=10).json()
    check(info.get("is_loaded") is True, f"/info says the model is not loaded: {info.get('load_error')}")
    print(f"  server: {info['model_name']} on {info['device']}")
    voices = client.get(f"{url}/voices", timeout=10).json()
    check(voices["count"] == len(voices["voices"]), "/voices count does not match its list")
    scenes = client.get(f"{url}/scenes", timeout=10).json()
    check(scenes["count"] == len(scenes["scenes"]), "/scenes count does not match its list")
    started = time.perf_counter()
    r = client.post(f"{url}/generate", json={"text": "Hello, this is a test of the HiggsAudio API.",
                                             "temperature": 0.7, "max_new_tokens": max_new_tokens, "seed": 12345},
                    timeout=600)
    check_status(r, "/generate")
    result = r.json()
    check(result["success"] is True, "/generate did not report success")
    audio = base64.b64decode(result["audio_base64"])
    rate, channels, seconds = wav_info(audio)
    check(rate == 24000 and channels == 1, f"expected 24 kHz mono, got {rate} Hz x{channels}")
    check(abs(seconds - result["duration"]) < 0.01, "duration does not match the WAV")
    check(seconds > 0, "no audio")
    bad = client.post(f"{url}/generate", json={"text": "Hi", "temperature": 9}, timeout=10)
    check(bad.status_code in (400, 422) and "temperature" in bad.text, "an out-of-range temperature was accepted")
    return f"{seconds:.2f}s audio in {time.perf_counter() - started:.2f}s -> {save('basic.wav', audio)}"


def test_voice_clone(client: requests.Session, url: str, max_new_tokens: int) -> str:
    voices = [v["name"] for v in client.get(f"{url}/voices", timeout=10).json()["voices"]]
    check(bool(voices), "the server has no voices to clone")
    voice = "belinda" if "belinda" in voices else voices[0]
    r = client.post(f"{url}/generate", json={"text": "Hello, this is a cloned voice.", "ref_audio": voice,
                                             "max_new_tokens": max_new_tokens, "seed": 7}, timeout=600)
    check_status(r, f"/generate with ref_audio={voice}")
    audio = base64.b64decode(r.json()["audio_base64"])
    path = save(f"voice_clone_{voice}.wav", audio)
    missing = client.post(f"{url}/generate", json={"text": "Hi", "ref_audio": "no_such_voice_xyz"}, timeout=10)
    check(missing.status_code == 404, f"an unknown voice answered {missing.status_code}, expected 404")
    files = {"ref_audio_file": ("reference.wav", audio, "audio/wav")}
    up = client.post(f"{url}/generate-upload", data={"text": "Cloned from an upload.",
                                                      "max_new_tokens": str(max_new_tokens), "seed": "3"},
                     files=files, timeout=600)
    check_status(up, "/generate-upload")
    save("voice_clone_upload.wav", base64.b64decode(up.json()["audio_base64"]))
    return f"named voice '{voice}' and an upload -> {path}"


def read_sse(response: requests.Response):
    event, data = None, []
    for line in response.iter_lines(decode_unicode=True):
        if line is None:
            continue
        if line == "":
            if event:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


@dataclass
class StreamResult:
    events: list[str] = field(default_factory=list)
    pcm: bytearray = field(default_factory=bytearray)
    first_audio_s: float | None = None  # from sending the request to the first audio event
    total_s: float = 0.0  # from sending the request to the end of the stream


def stream(client: requests.Session, url: str, body: dict) -> StreamResult:
    """POST /generate-stream and read its events as they arrive, timing the first audio."""
    result = StreamResult()
    started = time.perf_counter()
    with client.post(f"{url}/generate-stream", json=body, stream=True, timeout=600) as r:
        check_status(r, "/generate-stream")
        check(r.headers.get("Content-Type", "").startswith("text/event-stream"), "not an event stream")
        for event, data in read_sse(r):
            result.events.append(event)
            if event == "audio":
                if result.first_audio_s is None:
                    result.first_audio_s = time.perf_counter() - started
                result.pcm += base64.b64decode(data["audio_base64"])
                print(f"  audio #{data['index']}: {data['samples']} samples, "
                      f"{data['progress']['generated_tokens']}/{data['progress']['max_new_tokens']} tokens")
            elif event == "error":
                raise CheckFailed(f"stream error: {data['message']}")
    result.total_s = time.perf_counter() - started
    return result


def test_streaming(client: requests.Session, url: str, max_new_tokens: int) -> str:
    result = stream(client, url, {"text": "Streaming test.", "max_new_tokens": max_new_tokens, "seed": 99})
    kinds = result.events
    check(kinds[:1] == ["start"] and kinds[-1:] == ["done"], f"unexpected event order: {kinds}")
    check(kinds.count("audio") >= 1, "no audio events")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000), w.writeframes(bytes(result.pcm))
    path = save("streaming.wav", buffer.getvalue())
    return (f"{kinds.count('audio')} audio events, first audio after {result.first_audio_s:.2f}s of "
            f"{result.total_s:.2f}s -> {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Test a running Higgs Audio server")
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--test", choices=TESTS + ("all",), default="all")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="keep CPU runs short")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    selected = TESTS if args.test == "all" else (args.test,)
    runners = {"basic": test_basic, "voice-clone": test_voice_clone, "streaming": test_streaming}
    results = []
    with requests.Session() as client:
        for name in selected:
            print(f"[{name}] running against {url} ...", flush=True)
            try:
                detail = runners[name](client, url, args.max_new_tokens)
                results.append((name, True, detail))
                print(f"[{name}] PASS {detail}", flush=True)
            except (CheckFailed, requests.RequestException, KeyError, ValueError) as exc:
                results.append((name, False, str(exc)))
                print(f"[{name}] FAIL {exc}", flush=True)
    passed = sum(ok for _, ok, _ in results)
    print(f"\n{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
