"""Incremental decoding of audio frames for streaming, seamless by construction.

The codec's decoder is convolutional and not causal, but its reach is finite (about 9 frames each way). We
decode overlapping windows that give every emitted frame at least `context` frames of real context on both sides
(or the true sequence edge), and emit only that part: the joined pieces equal a one-shot decode of all frames to
float rounding, so there are no clicks at the seams. The first piece is small so audio starts early; later
pieces double in size (up to `max_chunk`) because each window also decodes 2 x `context` frames of overlap: big
pieces keep that overhead low once the listener has a buffer. `/generate` uses the same schedule, so the joined
stream and the one-shot answer are the same samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..request import SAMPLES_PER_FRAME


class StreamDecoder:
    def __init__(
        self,
        decode: Callable[[torch.Tensor], np.ndarray],
        num_codebooks: int,
        context: int = 10,
        first_chunk: int = 2,
        chunk: int = 10,
        max_chunk: int = 80,
    ):
        self._decode = decode
        self.num_codebooks = num_codebooks
        self.context = context
        self.first_chunk = first_chunk
        self.chunk = chunk  # the second piece; each later one doubles, up to max_chunk
        self.max_chunk = max_chunk
        self._pieces = 0
        self._frames: list[torch.Tensor] = []
        self.emitted = 0  # frames already turned into samples

    def _window(self, end: int, last: bool) -> np.ndarray:
        start = max(0, self.emitted - self.context)
        stop = len(self._frames) if last else min(len(self._frames), end + self.context)
        audio = self._decode(stack(self._frames[start:stop]))
        offset = (self.emitted - start) * SAMPLES_PER_FRAME
        piece = audio[offset : offset + (end - self.emitted) * SAMPLES_PER_FRAME]
        self.emitted = end
        self._pieces += 1
        return piece

    def _next_size(self) -> int:
        if self._pieces == 0:
            return self.first_chunk
        return min(self.max_chunk, self.chunk * 2 ** (self._pieces - 1))

    def push(self, frame) -> np.ndarray | None:
        """Add one frame [codebooks] (a NumPy row, as the engine hands it out, or a tensor); return new samples
        when a piece is ready."""
        self._frames.append(frame)
        size = self._next_size()
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
        return stack(self._frames) if self._frames else torch.zeros((0, self.num_codebooks), dtype=torch.long)


def stack(frames) -> torch.Tensor:
    """Frames (NumPy rows or tensors) as one int64 tensor [frames, codebooks]."""
    return torch.from_numpy(np.stack([np.asarray(f, dtype=np.int64) for f in frames]))
