"""What one server process holds: settings, the voice and scene libraries, the pool loader and the service."""

from __future__ import annotations

import logging
import threading

from flask import current_app

from model_pool.pool_loader import PoolLoader
from model_pool.service import TTSService

from . import metrics
from .prompt_dirs import open_libraries
from .settings import Settings

log = logging.getLogger("higgs.runtime")


class Runtime:
    def __init__(self, settings: Settings, loader: PoolLoader | None = None):
        self.settings = settings
        self.sessions = threading.BoundedSemaphore(settings.max_sessions)  # realtime sessions open in this worker
        self.voices, self.scenes = open_libraries(settings)  # located from any working directory, logged
        self.loader = loader or PoolLoader(self._build_pool)
        self.loader.on_ready = lambda pool: pool.observe(metrics.observe_pool)
        self.service = TTSService(
            self.loader,
            self.voices,
            self.scenes,
            max_new_tokens=settings.max_new_tokens,
            acquire_timeout=settings.queue_timeout,
            max_text_chars=settings.max_text_chars,
            max_speakers=settings.max_speakers,
            max_request_steps=settings.max_request_steps,
            device=settings.device,
            guard=settings.guard,
        )

    def _build_pool(self):
        from model_pool.engine.voice_cache import VoiceCache
        from model_pool.pool import ModelPool, split_cpu_threads

        s = self.settings
        return ModelPool.load(
            s.model_path,
            s.audio_tokenizer_path,
            device=s.device,
            instances_per_device=s.instances_per_device,
            voice_cache=VoiceCache(max_seconds=s.max_upload_seconds),
            max_waiting=s.max_queue or None,
            max_batch_size=s.max_batch_size,
            compile=s.compile,
            quantization=s.quantization,
            context_tokens=s.max_context_tokens,
            prefill_chunk=s.prefill_chunk or None,
            cpu_threads=s.cpu_threads or split_cpu_threads(s.instances_per_device * max(1, s.workers)),
        )

    def start(self) -> Runtime:
        self.loader.start(background=self.settings.load_in_background)
        return self



def runtime() -> Runtime:
    return current_app.extensions["higgs"]
