"""Regenerate the example voices in examples/voice_prompts with Debian's espeak-ng (apt-get install espeak-ng).

    python examples/make_voice_prompts.py

Each voice is NAME.wav (24 kHz mono, 3-10 s) plus NAME.txt, its transcript, and NAME.json marking it synthetic
(GET /voices then says "synthetic": true). These are stand-ins so the server works out of the box: on the real
model, cloning them gives a synthetic voice. Add real recordings with POST /voices (or NAME.wav + NAME.txt files).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model_pool.audio import decode_clip  # noqa: E402

OUT = Path(__file__).resolve().parent / "voice_prompts"

# name: (espeak-ng voice, words per minute, pitch 0-99, transcript)
VOICES = {
    "belinda": ("en-us+f3", 150, 60, "Twas the night before my birthday. Hooray! It's almost here! "
                "It may not be a holiday, but it's the best day of the year."),
    "en_woman": ("en-gb+f2", 155, 55, "The weather today is bright and clear, with a gentle breeze from the west."),
    "en_man": ("en-us+m3", 145, 35, "Good evening. Here are the headlines from around the world tonight."),
    "broom_salesman": ("en-us+m7", 170, 45, "I have the best brooms in town, sturdy, light, and built to last."),
    "zh_man_sichuan": ("cmn", 140, 40, "今天天气很好，我们一起去公园散步吧。"),
}


def synthesize(voice: str, wpm: int, pitch: int, text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", tmp.name, text],
                       check=True)
        samples = decode_clip(tmp.name, "espeak-ng output", max_seconds=60)
    return (0.9 * samples / max(1e-6, float(np.abs(samples).max()))).astype(np.float32)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (voice, wpm, pitch, text) in VOICES.items():
        samples = synthesize(voice, wpm, pitch, text)
        seconds = samples.shape[0] / 24000
        if not 3.0 <= seconds <= 10.0:
            raise SystemExit(f"{name}: {seconds:.1f}s is outside 3-10 s; adjust its text or speed")
        tmp = OUT / f".{name}.wav.tmp"
        sf.write(tmp, samples, 24000, subtype="PCM_16", format="WAV")
        tmp.replace(OUT / f"{name}.wav")
        (OUT / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        meta = {"synthetic": True, "source": f"espeak-ng voice {voice} (a synthetic stand-in, not a recording)"}
        (OUT / f"{name}.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
        print(f"{name}: {seconds:.1f}s ({voice})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
