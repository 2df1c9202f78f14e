"""A thread-safe pool of preloaded engine instances, N per device, lent with a context manager.

Each instance batches up to `capacity` concurrent requests, so lending hands out a slot
on the least loaded instance; a request waits only when every slot of every instance is taken.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .defaults import DEFAULT_MAX_CONTEXT_TOKENS, DEFAULT_PREFILL_CHUNK, default_max_waiting
from .engine.engine import HiggsEngine
from .engine.loader import load, resolve_devices
from .engine.memory import free_memory, plan_slots
from .engine.quantize import check as check_quantization
from .engine.quantize import weight_report
from .engine.slot_cache import SlotCache
from .engine.voice_cache import VoiceCache
from .errors import Cancelled, ModelLoadError, PoolBusy
from .lifecycle import LifecycleError

log = logging.getLogger(__name__)


def split_cpu_threads(instances: int, cores: int | None = None) -> int:
    """Torch intra-op threads per instance: N instances together use the cores once, not N times, and one core
    stays free for the codec decoding of streams, audio encoding and HTTP, which run beside the decode loop.

    Measured on 2 cores (small model): a batch-of-8 decode step took 23-31 ms on 1 thread and 40-69 ms on 2
    (skinny matrix products split badly, and the second thread fights the stream decoders for its core)."""
    cores = cores or os.cpu_count() or 1
    spare = 1 if cores > 1 else 0
    return max(1, (cores - spare) // max(1, instances))


def compile_enabled(mode: str | bool, device: torch.device) -> bool:
    """--compile auto (the default) compiles on CUDA only: on a CPU the compiled step gains little."""
    if isinstance(mode, bool):
        return mode
    return mode == "on" or (mode == "auto" and device.type == "cuda")


class Reservation:
    """A request's place in the pool, from admit() until it ends: released exactly once by its owner (a second
    release raises LifecycleError). One dropped unreleased is reclaimed when it is collected, with a warning: that
    is a leak in the caller, which tests catch as one."""

    def __init__(self, pool: ModelPool):
        self._unreserve = pool._unreserve
        self._reclaim = weakref.finalize(self, pool._reclaim)

    @property
    def held(self) -> bool:
        return self._reclaim.alive

    def release(self) -> None:
        if not self._reclaim.detach():
            raise LifecycleError("a pool reservation was released twice")
        self._unreserve()


class ModelPool:
    def __init__(self, engines: list[HiggsEngine], max_waiting: int | None = None):
        """max_waiting: requests that may wait for a slot; None means twice the pool's batch slots."""
        if not engines:
            raise ValueError("a pool needs at least one engine")
        self.engines = list(engines)
        self._slots = {id(e): e.capacity for e in self.engines}
        # Every instance holds the same checkpoint in the same quantization: one instance's weights, for /info.
        model = getattr(self.engines[0], "model", None)
        self.weights = weight_report(model).as_dict() if isinstance(model, torch.nn.Module) else None
        self.max_waiting = default_max_waiting(sum(self._slots.values())) if max_waiting is None else max_waiting
        self._admitted = 0  # requests between admit() and their end: running, waiting, or about to wait
        self._load = {id(e): 0 for e in self.engines}
        self._cond = threading.Condition()
        self._waiting = 0
        self._observers: list[Callable[[dict], None]] = []
        self.leaks = 0  # reservations dropped unreleased (reclaimed); a test asserts none

    def observe(self, callback: Callable[[dict], None]) -> None:
        """Call callback(stats) now and whenever an instance is lent or returned or a waiter comes or goes."""
        with self._cond:
            self._observers.append(callback)
            callback(self._stats())

    def _changed(self) -> None:  # called with the lock held
        if self._observers:
            stats = self._stats()
            for callback in self._observers:
                callback(stats)

    @classmethod
    def load(
        cls,
        model_path: str,
        audio_tokenizer_path: str,
        device: str = "auto",
        instances_per_device: int = 1,
        voice_cache: VoiceCache | None = None,
        max_waiting: int | None = None,
        max_batch_size: int | None = None,
        compile: str | bool = "auto",
        context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
        prefill_chunk: int | None = DEFAULT_PREFILL_CHUNK,
        cpu_threads: int | None = None,
        quantization: str = "none",
    ) -> ModelPool:
        """max_batch_size None or 0: as many slots as the memory plan fits, up to the device kind's ceiling
        (defaults.AUTO_MAX_SLOTS); N: at most N. quantization: the backbone's weights (engine/quantize.py)."""
        devices = resolve_devices(device)
        for dev in devices:  # before any weight is read: a quantization the device cannot run fails at once
            check_quantization(quantization, dev)
        cache = voice_cache or VoiceCache()
        if all(d.type == "cpu" for d in devices):
            threads = cpu_threads or split_cpu_threads(instances_per_device)
            torch.set_num_threads(threads)
            log.info("CPU: %d instance(s) share %d torch thread(s) each", instances_per_device, threads)
        engines = []
        for dev in devices:
            compiled = compile_enabled(compile, dev)
            if compiled and instances_per_device > 1:
                raise ModelLoadError(
                    f"--compile runs one instance per device ({instances_per_device} requested on {dev}): compiled "
                    "steps of several instances in one process are not thread-safe. Use --instances-per-device 1 "
                    "with a larger --max-batch-size, or --compile off.")
            loaded = [load(model_path, audio_tokenizer_path, dev, quantization) for _ in range(instances_per_device)]
            config = loaded[0].model.config
            context = min(context_tokens, config.max_position_embeddings)
            plan = plan_slots(str(dev), free_memory(dev), SlotCache.bytes_per_token(config, loaded[0].model.dtype),
                              context, max_batch_size, instances_per_device, weights=loaded[0].weights)
            log.info("memory plan: %s", plan.describe())
            for i, one in enumerate(loaded):
                engines.append(HiggsEngine(one, cache, name=f"{dev}#{i}", max_batch_size=plan.slots,
                                           compile=compiled, context_tokens=context, prefill_chunk=prefill_chunk))
        return cls(engines, max_waiting)

    @property
    def size(self) -> int:
        return len(self.engines)

    def _pick(self) -> HiggsEngine | None:
        """The engine with the most free slots (the first, on a tie), or None when all are full."""
        best, best_free = None, 0
        for engine in self.engines:
            free = self._slots[id(engine)] - self._load[id(engine)]
            if free > best_free:
                best, best_free = engine, free
        return best

    def admit(self, wait: float = 0.0) -> Reservation:
        """A place for one request (a batch slot, or a place in the queue), or PoolBusy. Taken before a response
        starts, so a full server answers 503 at once (wait 0); a realtime session's next sentence waits up to `wait`
        seconds for a place instead. The place is held until its owner releases it."""
        deadline = time.monotonic() + wait
        with self._cond:
            capacity = sum(self._slots.values()) + self.max_waiting
            while self._admitted >= capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolBusy(f"server busy: {self._waiting} requests already waiting for a model instance")
                self._cond.wait(remaining)  # a release notifies
            self._admitted += 1
            self._changed()
        return Reservation(self)

    def _unreserve(self) -> None:
        with self._cond:
            self._admitted -= 1
            self._changed()
            self._cond.notify_all()

    def _reclaim(self) -> None:
        log.warning("a pool reservation was dropped without being released: reclaimed (a leak in its owner)")
        self.leaks += 1
        self._unreserve()

    @contextmanager
    def lend(self, timeout: float | None = None, cancel: threading.Event | None = None,
             reservation: Reservation | None = None) -> Iterator[HiggsEngine]:
        """Lend a free instance to an admitted request; raise PoolBusy if none frees up within `timeout` seconds,
        and Cancelled if `cancel` is set while waiting (a client that went away stops queueing).

        `reservation`: the place the caller's admit() took, which the caller releases (its generation handle). With
        none, lend admits the request itself and releases that place when it returns. The instance always comes
        back: on return, on exceptions, and on GeneratorExit when the caller is a generator that gets closed."""
        if reservation is not None:
            with self._borrow(timeout, cancel) as engine:
                yield engine
            return
        own = self.admit()
        try:
            with self._borrow(timeout, cancel) as engine:
                yield engine
        finally:
            own.release()

    @contextmanager
    def _borrow(self, timeout: float | None, cancel: threading.Event | None) -> Iterator[HiggsEngine]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            self._changed()
            try:
                while (engine := self._pick()) is None:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled while waiting for a model instance")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise PoolBusy(f"server busy: no model instance became free within {timeout:g}s")
                    # Wake up now and then to notice a cancel; a returned instance wakes us at once.
                    self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
                self._load[id(engine)] += 1
            finally:
                self._waiting -= 1
                self._changed()
        try:
            yield engine
        finally:
            with self._cond:
                self._load[id(engine)] -= 1
                self._changed()
                self._cond.notify()

    def stats(self) -> dict:
        with self._cond:
            return self._stats()

    def _stats(self) -> dict:  # with the lock held
        devices: dict[str, dict] = {}
        for engine in self.engines:
            load = self._load[id(engine)]
            entry = devices.setdefault(str(engine.device), {"total": 0, "busy": 0, "free": 0, "requests": 0})
            entry["total"] += 1
            entry["busy" if load else "free"] += 1
            entry["requests"] += load
        busy = sum(entry["busy"] for entry in devices.values())
        stats = {
            "instances": len(self.engines),
            "busy": busy,  # instances generating for at least one request
            "free": len(self.engines) - busy,
            "requests": sum(self._load.values()),  # requests being generated, across all batches
            "slots": sum(self._slots.values()),
            "waiting": self._waiting,
            "admitted": self._admitted,  # requests in flight: running, waiting, or about to start
            "devices": devices,
        }
        if self.weights is not None:  # one instance's: quantization, bytes, unquantized_bytes, dtype
            stats["weights"] = self.weights
        return stats


