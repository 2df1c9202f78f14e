"""Encoded codes of named voices, computed once and reused while the voice file is unchanged."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from ..audio import load_voice_file


class VoiceCache:
    """Keyed by (path, mtime, size): replacing a voice file invalidates its entry. Shared by all instances."""

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: str, encode: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            codes = self._entries.get(key)
            if codes is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return codes
            self.misses += 1
        codes = encode(load_voice_file(path))  # outside the lock: encoding takes a while
        with self._lock:
            for stale in [k for k in self._entries if k[0] == path]:
                del self._entries[stale]
            self._entries[key] = codes
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return codes
