"""Load the pool in a background thread so a server can answer (and explain itself) while models load."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import LoadFailed, NotReady
from .pool import ModelPool

log = logging.getLogger(__name__)


class PoolLoader:
    """States: 'idle' -> 'loading' -> 'ready', or -> 'failed' (with the error). Never raises into the caller: any
    failure, in loading or in on_ready, ends in 'failed' with its message."""

    def __init__(self, factory: Callable[[], ModelPool], on_ready: Callable[[ModelPool], None] | None = None):
        self._factory = factory
        self.on_ready = on_ready
        self._pool: ModelPool | None = None
        self.error: str | None = None
        self.state = "idle"
        self._lock = threading.Lock()

    @classmethod
    def of(cls, pool: ModelPool) -> PoolLoader:
        """A loader that already holds `pool` (in-process use: tests, benchmarks)."""
        return cls(lambda: pool).start(background=False)

    def start(self, background: bool = True) -> PoolLoader:
        with self._lock:
            if self.state != "idle":
                return self
            self.state = "loading"
        if background:
            threading.Thread(target=self._load, name="pool-loader", daemon=True).start()
        else:
            self._load()
        return self

    def _load(self) -> None:
        started = time.monotonic()
        try:
            pool = self._factory()
            if self.on_ready is not None:
                self.on_ready(pool)
        except Exception as exc:  # any failure must leave the server up and explaining itself
            self.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.exception("model loading failed: %s", self.error)
            return
        self._pool = pool
        self.state = "ready"
        log.info("models ready: %d instance(s) in %.1fs", pool.size, time.monotonic() - started)

    def pool(self) -> ModelPool:
        """The loaded pool; NotReady (503 + Retry-After) while loading, LoadFailed (503, no retry will help) after a
        failed load."""
        if self._pool is not None:
            return self._pool
        if self.state == "failed":
            raise LoadFailed(f"model failed to load: {self.error}")
        raise NotReady("model is still loading; retry shortly")

    def status(self) -> dict:
        """What health checks and /info show: the state, the load error, and the pool's numbers once loaded."""
        pool = self._pool
        return {"state": self.state, "load_error": self.error, "pool": pool.stats() if pool else None,
                "devices": sorted({str(e.device) for e in pool.engines}) if pool else []}
