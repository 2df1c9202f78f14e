"""Incremental decoding of audio frames for streaming, seamless by construction.

The codec's decoder is convolutional and not causal, but its reach is finite (about 9 frames each way). We
decode overlapping windows that give every emitted frame at least `context` frames of real context on both sides
(or the true sequence edge), and emit only that part: the joined pieces equal a one-shot decode of all frames to
float rounding, so there are no clicks at the seams. The first piece is small so audio starts early.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .request import SAMPLES_PER_FRAME


class StreamDecoder:
    def __init__(
        self,
        decode: Callable[[torch.Tensor], np.ndarray],
        context: int = 10,
        first_chunk: int = 2,
        chunk: int = 15,
    ):
        self._decode = decode
        self.context = context
        self.first_chunk = first_chunk
        self.chunk = chunk
        self._frames: list[torch.Tensor] = []
        self.emitted = 0  # frames already turned into samples

    def _window(self, end: int, last: bool) -> np.ndarray:
        start = max(0, self.emitted - self.context)
        stop = len(self._frames) if last else min(len(self._frames), end + self.context)
        audio = self._decode(torch.stack(self._frames[start:stop]))
        offset = (self.emitted - start) * SAMPLES_PER_FRAME
        piece = audio[offset : offset + (end - self.emitted) * SAMPLES_PER_FRAME]
        self.emitted = end
        return piece

    def push(self, frame: torch.Tensor) -> np.ndarray | None:
        """Add one frame [codebooks]; return new samples when a piece is ready."""
        self._frames.append(frame)
        size = self.first_chunk if self.emitted == 0 else self.chunk
        if len(self._frames) >= self.emitted + size + self.context:
            return self._window(self.emitted + size, last=False)
        return None

    def flush(self) -> np.ndarray | None:
        """Samples for every frame not yet emitted (the end of the sequence is a true edge)."""
        if self.emitted >= len(self._frames):
            return None
        return self._window(len(self._frames), last=True)

    @property
    def frames(self) -> torch.Tensor:
        return torch.stack(self._frames) if self._frames else torch.zeros((0, 8), dtype=torch.long)
