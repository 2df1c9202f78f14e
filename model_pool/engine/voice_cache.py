"""Encoded codes of named voices, computed once and reused while the voice file is unchanged."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from ..audio import decode_clip
from ..defaults import MAX_REFERENCE_SECONDS
from ..errors import UnknownVoice


class VoiceCache:
    """Keyed by the file's identity (path, inode, size, mtime, ctime): replacing a voice file invalidates its entry,
    even with a clip of the same size within one timestamp tick (the library replaces a file by renaming a new one
    over it: a new inode; a rewrite in place changes ctime, which no client sets). Shared by all instances. Voice
    files are decoded with the same bounds as uploads (at most `max_seconds`)."""

    def __init__(self, max_entries: int = 64, max_seconds: float = MAX_REFERENCE_SECONDS):
        self.max_entries = max_entries
        self.max_seconds = max_seconds
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: str, encode: Callable[[np.ndarray], torch.Tensor], voice: str | None = None) -> torch.Tensor:
        """The codes of the voice file at `path`; UnknownVoice if it is gone (deleted since it was looked up)."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise UnknownVoice(voice or os.path.basename(path)) from None
        key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        with self._lock:
            codes = self._entries.get(key)
            if codes is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return codes
            self.misses += 1
        codes = encode(decode_clip(path, "ref_audio", self.max_seconds))  # outside the lock: encoding takes a while
        with self._lock:
            for stale in [k for k in self._entries if k[0] == path]:
                del self._entries[stale]
            self._entries[key] = codes
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return codes
