"""Serving, per endpoint, between the thin routes and model_pool's TTSService: a body to a prepared job and its
generation handle (jobs), how a handle's events become a response watched for clients that leave (responses),
the spec's endpoints (spec_api), OpenAI's speech bodies (speech), Server-Sent Events (sse), audio formats (encoder,
pcm). No torch here."""
