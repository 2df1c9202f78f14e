"""A realtime session as a voice agent uses it: text fed word by word (an LLM's pace), audio per sentence back.

    .venv/bin/python examples/realtime_client.py --url ws://localhost:8000 --voice belinda \\
        --text "Hello there. This plays while the rest is still being written." -o realtime.wav

Prints each sentence as its audio starts and when it ends (with the time since the text began), then writes all
the audio to a 24 kHz mono WAV. --cancel-after N sends input.cancel N seconds in, as a user interrupting would.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import wave

from websockets.sync.client import connect

SAMPLE_RATE = 24000


def feed(ws, text: str, words_per_second: float) -> None:
    """Send the text a word at a time, then end the utterance."""
    for word in text.split(" "):
        ws.send(json.dumps({"type": "input.text", "text": word + " "}))
        time.sleep(1 / words_per_second)  # the pace of an LLM writing
    ws.send(json.dumps({"type": "input.done"}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://localhost:8000", help="the server (ws:// or wss://)")
    parser.add_argument("--text", default="Hello there. I am speaking one sentence at a time. Can you hear me?")
    parser.add_argument("--voice", default=None, help="a library voice or alias (default: a smart voice)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="decode steps per sentence at most")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--words-per-second", type=float, default=15.0, help="about 20 LLM tokens a second")
    parser.add_argument("--cancel-after", type=float, default=None, help="send input.cancel after this many s")
    parser.add_argument("-o", "--output", default="realtime.wav")
    args = parser.parse_args()

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    audio = bytearray()
    with connect(f"{args.url.rstrip('/')}/v1/audio/speech/stream", additional_headers=headers) as ws:
        config = {"type": "session.config", "voice": args.voice, "seed": args.seed,
                  "max_new_tokens": args.max_new_tokens, "response_format": "pcm", "stream_audio": True}
        ws.send(json.dumps({k: v for k, v in config.items() if v is not None}))
        started = time.perf_counter()
        threading.Thread(target=feed, args=(ws, args.text, args.words_per_second), daemon=True).start()
        if args.cancel_after is not None:
            threading.Timer(args.cancel_after, lambda: ws.send(json.dumps({"type": "input.cancel"}))).start()
        while True:
            message = ws.recv()
            if isinstance(message, bytes):
                audio += message
                continue
            event = json.loads(message)
            now = f"{time.perf_counter() - started:6.2f}s"
            if event["type"] == "audio.start":
                print(f"{now} speaking: {event['sentence_text']}")
            elif event["type"] == "audio.done":
                print(f"{now} done ({event['total_bytes'] / 2 / SAMPLE_RATE:.2f}s of audio)")
            elif event["type"] in ("error", "cancelled"):
                print(f"{now} {event['type']}: {event.get('message', '')}")
                if event["type"] == "cancelled":
                    break
            elif event["type"] == "session.done":
                print(f"{now} {event['total_sentences']} sentence(s)")
                break
        ws.send(json.dumps({"type": "session.close"}))
    with wave.open(args.output, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(bytes(audio))
    print(f"wrote {args.output} ({len(audio) / 2 / SAMPLE_RATE:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
