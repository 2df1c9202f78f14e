"""The vocoder stage: every stream's audio decoded off the decode loop, batched across streams on a GPU.

Each stream's StreamDecoder asks for windows of frames as they complete (a short first window, then longer ones).
On a GPU one codec call per window per stream would be a long run of small kernel launches per stream: here the
windows that are asked for at the same time are decoded together, one codec call per window length, by the stage's
own thread on its own CUDA stream (codec.py), so the decode loop's stream never waits behind audio work. A window
whose batched call raises is decoded again alone, so a fault pins on its stream and the others get their audio.

On the CPU a window is decoded in the asking thread, one at a time: the CPU has no launch overhead to amortise,
and a batched convolution rounds differently from a lone one (about 1e-7, below 16-bit PCM's resolution but not
bit for bit), which would make a stream's samples depend on which streams decoded beside it. On a GPU that
trade is taken: kernel numerics already differ there, and the batched call is what keeps the codec off the
critical path (the bitwise promises are the CPU's; docs/performance.md says what holds on a GPU).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)


class _Request:
    def __init__(self, frames: torch.Tensor):
        self.frames = frames
        self.done = threading.Event()
        self.audio: np.ndarray | None = None
        self.error: BaseException | None = None


class Vocoder:
    """decode(frames [n, codebooks]) -> float32 samples; thread-safe. `batched`: coalesce concurrent requests."""

    def __init__(self, decode_batch: Callable[[torch.Tensor], list[np.ndarray]], batched: bool, name: str = "vocoder"):
        self._decode_batch = decode_batch  # [streams, n, codebooks] -> one sample array per stream
        self.batched = batched
        self.name = name
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def decode(self, frames: torch.Tensor) -> np.ndarray:
        if frames.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        if not self.batched:
            return self._decode_batch(frames.unsqueeze(0))[0]
        request = _Request(frames)
        with self._cond:
            self._pending.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.audio

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                pending, self._pending = self._pending, []
            groups: dict[int, list[_Request]] = defaultdict(list)
            for request in pending:
                groups[request.frames.shape[0]].append(request)
            for requests in groups.values():
                self._run(requests)

    def _run(self, requests: list[_Request]) -> None:
        try:
            for request, audio in zip(requests, self._decode_batch(torch.stack([r.frames for r in requests]))):
                request.audio = audio
        except Exception as exc:  # noqa: BLE001 - pinned on its stream below
            if len(requests) > 1:
                log.warning("batched decode of %d streams failed on %s: decoding them one by one", len(requests),
                            self.name)
                for request in requests:
                    self._run([request])
                return
            requests[0].error = exc
        for request in requests:
            request.done.set()
