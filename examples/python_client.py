"""The spec's Python client: generate speech with a named voice and save it as output.wav.

    python examples/python_client.py [--url http://localhost:8000]
"""

import argparse
import base64

import requests

parser = argparse.ArgumentParser()
parser.add_argument("--url", default="http://localhost:8000")
parser.add_argument("--out", default="output.wav")
args = parser.parse_args()

client = requests.Session()
base_url = args.url.rstrip("/")
response = client.post(f"{base_url}/generate", json={
    "text": "Hello, this is a test of the HiggsAudio API.",
    "ref_audio": "belinda",
    "temperature": 0.7,
    "max_new_tokens": 512,
    "seed": 12345,
})
if response.status_code == 200:
    result = response.json()
    if result["success"]:
        audio_bytes = base64.b64decode(result["audio_base64"])
        with open(args.out, "wb") as f:
            f.write(audio_bytes)
        print(f"Audio saved, duration: {result['duration']:.2f}s")
else:
    raise SystemExit(f"{response.status_code}: {response.text}")
