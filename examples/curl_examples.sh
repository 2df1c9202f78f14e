#!/usr/bin/env bash
# The spec's cURL commands. Usage: bash examples/curl_examples.sh [http://localhost:8000]
set -euo pipefail
BASE="${1:-http://localhost:8000}"
# Print a /generate answer without its (long) base64 audio.
summary() { python3 -c 'import sys, json; r = json.load(sys.stdin); r["audio_base64"] = "<%d base64 chars>" % len(r.get("audio_base64", "")); print(r)'; }

curl -sS -X POST "$BASE/generate" -H "Content-Type: application/json" \
  -d '{"text": "Hello, this is a test.", "ref_audio": "belinda", "temperature": 0.7, "max_new_tokens": 512}' | summary
curl -sS "$BASE/voices"; echo
curl -sS "$BASE/info"; echo
# Streaming (Server-Sent Events): -N turns off curl's buffering so events print as they arrive.
curl -sS -N -X POST "$BASE/generate-stream" -H "Content-Type: application/json" \
  -d '{"text": "Streaming test.", "max_new_tokens": 256}' | cut -c1-120
# Upload a reference clip (multipart/form-data).
curl -sS -X POST "$BASE/generate-upload" -F "text=Cloned from my own clip." -F "max_new_tokens=256" \
  -F "ref_audio_file=@examples/voice_prompts/en_man.wav" -F "ref_text=$(cat examples/voice_prompts/en_man.txt)" | summary
