"""Load the pool in a background thread so a server can answer (and explain itself) while models load."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import NotReady
from .pool import ModelPool

log = logging.getLogger(__name__)


class PoolLoader:
    """States: 'loading' -> 'ready', or 'loading' -> 'failed' (with the error). Never raises into the caller."""

    def __init__(self, factory: Callable[[], ModelPool], on_ready: Callable[[ModelPool], None] | None = None):
        self._factory = factory
        self.on_ready = on_ready
        self._pool: ModelPool | None = None
        self.error: str | None = None
        self.state = "idle"
        self.started_at: float | None = None
        self.load_seconds: float | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    def start(self, background: bool = True) -> PoolLoader:
        with self._lock:
            if self.state != "idle":
                return self
            self.state = "loading"
            self.started_at = time.monotonic()
        if background:
            threading.Thread(target=self._load, name="pool-loader", daemon=True).start()
        else:
            self._load()
        return self

    def _load(self) -> None:
        try:
            pool = self._factory()
        except Exception as exc:  # any failure must leave the server up and explaining itself
            self.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.exception("model loading failed: %s", self.error)
        else:
            if self.on_ready is not None:
                self.on_ready(pool)
            self._pool = pool
            self.state = "ready"
            self.load_seconds = time.monotonic() - (self.started_at or time.monotonic())
            log.info("models ready: %d instance(s) in %.1fs", pool.size, self.load_seconds)
        finally:
            self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def is_loaded(self) -> bool:
        return self.state == "ready"

    def pool(self) -> ModelPool:
        if self._pool is not None:
            return self._pool
        if self.state == "failed":
            raise NotReady(f"model failed to load: {self.error}", retry_after=60)
        raise NotReady("model is still loading; retry shortly", retry_after=10)

    def peek(self) -> ModelPool | None:
        return self._pool
