"""Audio on the wire in the format a client asked for: wav, pcm, mp3, opus, aac, flac (PyAV, i.e. ffmpeg).

Two modes. `encode_file` makes a whole file in a seekable buffer, so headers carry exact lengths (mp3's LAME tag,
m4a's edit list for aac): decoders give back exactly the generated samples. `StreamEncoder` emits bytes as audio
arrives, in containers that need no seeking (mp3, Ogg Opus, ADTS aac, FLAC, WAV with open-ended sizes, raw pcm).
Streamed mp3 and aac cannot say where the encoder's priming ends, so decoders play up to ~70 ms more (silence).

`speed` (0.25-4.0) changes tempo, not pitch, with ffmpeg's atempo filter, chunk by chunk.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from av.filter import Graph

from model_pool.request import SAMPLE_RATE

from .pcm import to_pcm16


@dataclass(frozen=True)
class AudioFormat:
    name: str
    codec: str | None  # None: raw 16-bit PCM, no container
    file_container: str | None
    file_mime: str
    stream_container: str | None
    stream_mime: str
    options: tuple = ()  # container options for streaming


FORMATS: dict[str, AudioFormat] = {f.name: f for f in (
    AudioFormat("wav", "pcm_s16le", "wav", "audio/wav", "wav", "audio/wav"),
    AudioFormat("pcm", None, None, "audio/pcm", None, "audio/pcm"),
    AudioFormat("mp3", "libmp3lame", "mp3", "audio/mpeg", "mp3", "audio/mpeg"),
    AudioFormat("opus", "libopus", "ogg", "audio/ogg", "ogg", "audio/ogg", (("page_duration", "40000"),)),
    AudioFormat("aac", "aac", "ipod", "audio/mp4", "adts", "audio/aac"),
    AudioFormat("flac", "flac", "flac", "audio/flac", "flac", "audio/flac"),
)}
FORMAT_NAMES = tuple(FORMATS)


class _Sink:
    """A write-only file: ffmpeg sees it cannot seek, so it writes streamable headers."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    return frame


class TimeStretch:
    """Pitch-preserving tempo change, streaming: push float samples, get stretched float samples back."""

    def __init__(self, speed: float):
        self.graph = Graph()
        node = self.graph.add_abuffer(format="flt", sample_rate=SAMPLE_RATE, layout="mono",
                                      time_base=f"1/{SAMPLE_RATE}")
        for factor in _atempo_factors(speed):
            stage = self.graph.add("atempo", f"{factor:.6f}")
            node.link_to(stage)
            node = stage
        sink = self.graph.add("abuffersink")
        node.link_to(sink)
        self.graph.configure()
        self.pts = 0

    def push(self, samples: np.ndarray | None) -> np.ndarray:
        if samples is None:
            self.graph.push(None)
        elif samples.size:
            frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1), format="flt",
                                               layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, self.pts
            self.pts += samples.shape[0]
            self.graph.push(frame)
        out = []
        while True:
            try:
                out.append(self.graph.pull().to_ndarray().reshape(-1))
            except (av.BlockingIOError, av.EOFError):
                break
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def _atempo_factors(speed: float) -> list[float]:
    """atempo takes 0.5-2.0 per stage (wider ranges distort); chain stages for 0.25-4.0."""
    factors = []
    while speed < 0.5:
        factors.append(0.5)
        speed /= 0.5
    while speed > 2.0:
        factors.append(2.0)
        speed /= 2.0
    return factors + [speed]


class StreamEncoder:
    """push(samples) -> the bytes ready so far; finish() -> the rest. Samples: float32 mono at 24 kHz."""

    def __init__(self, fmt: str, speed: float = 1.0, seekable: bool = False):
        self.format = FORMATS[fmt]
        self.stretch = TimeStretch(speed) if speed != 1.0 else None
        self.pts = 0
        self.container = self.stream = None
        self.seekable = seekable
        self.sink = io.BytesIO() if seekable else _Sink()
        container = self.format.file_container if seekable else self.format.stream_container
        if self.format.codec is not None:
            # bitexact: no encoder tag, so a WAV has the plain 44-byte header naive clients expect.
            options = {"fflags": "+bitexact", **({} if seekable else dict(self.format.options))}
            self.container = av.open(self.sink, "w", format=container, options=options)
            self.stream = self.container.add_stream(self.format.codec, rate=SAMPLE_RATE, layout="mono")

    @property
    def mime(self) -> str:
        return self.format.file_mime if self.seekable else self.format.stream_mime

    def push(self, samples: np.ndarray) -> bytes:
        if self.stretch is not None:
            samples = self.stretch.push(samples)
        return self._encode(samples)

    def finish(self) -> bytes:
        data = self._encode(self.stretch.push(None)) if self.stretch is not None else b""
        if self.container is not None:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
        return self.sink.getvalue() if self.seekable else data + self.sink.take()

    def _encode(self, samples: np.ndarray) -> bytes:
        if samples.size:
            pcm = to_pcm16(samples)
            if self.container is None:
                self.sink.write(pcm.tobytes())
            else:
                for packet in self.stream.encode(_frame(pcm, self.pts)):
                    self.container.mux(packet)
                self.pts += pcm.shape[0]
        return b"" if self.seekable else self.sink.take()


def encode_file(samples: np.ndarray, fmt: str, speed: float = 1.0) -> tuple[bytes, str]:
    """A whole file with exact headers; returns (bytes, content type)."""
    encoder = StreamEncoder(fmt, speed, seekable=True)
    encoder.push(samples)
    return encoder.finish(), encoder.mime
