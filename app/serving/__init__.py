"""Serving, per endpoint, between the thin routes and model_pool's TTSService: job preparation (jobs), the watched
generation every endpoint consumes (generation), Server-Sent Events (sse), OpenAI speech bodies (speech), audio
formats (encoder, pcm). No torch here."""
