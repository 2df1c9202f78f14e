"""The audio codec side of one engine: reference audio to codes, codes to waveform.

On CUDA the codec runs on its own stream: decoding a stream's audio (and copying it to the host) then waits only
for codec work, not behind the decode steps the batch loop keeps queueing on the default stream. Decoding goes
through the vocoder stage (vocoder.py), which batches the windows streams ask for at the same time on a GPU.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..request import SAMPLE_RATE
from .vocoder import Vocoder


class Codec:
    def __init__(self, processor, device: torch.device):
        self.feature_extractor = processor.feature_extractor
        self.tokenizer = processor.audio_tokenizer
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        if device.type == "cuda":
            # cuDNN's default TF32 convolutions move the codec's samples by ~1e-3 between window sizes, so streamed
            # pieces would not join to the one-shot decode; the codec is the process's only cuDNN user (the model's
            # matrix products are bf16), so float32 convolutions cost nothing elsewhere.
            torch.backends.cudnn.allow_tf32 = False
        self.vocoder = Vocoder(self.decode_batch, batched=device.type == "cuda")

    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    @torch.inference_mode()
    def encode(self, samples: np.ndarray) -> torch.Tensor:
        """24 kHz mono float samples -> codes [frames, codebooks] (int64, on the CPU). Not padded to the hop length
        (as the processor: padding=False), so no zeros are appended to the reference."""
        features = self.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=False)
        with self._on_stream():
            values = features["input_values"].to(self.device, dtype=torch.float32)
            codes = self.tokenizer.encode(values, return_dict=False)  # [1, codebooks, frames]
            return codes[0].transpose(0, 1).to("cpu", torch.long).contiguous()

    def decode(self, frames: torch.Tensor) -> np.ndarray:
        """codes [frames, codebooks] -> float32 samples (960 per frame), through the vocoder stage."""
        return self.vocoder.decode(frames)

    @torch.inference_mode()
    def decode_batch(self, frames: torch.Tensor) -> list[np.ndarray]:
        """codes [streams, frames, codebooks] -> float32 samples per stream, in one codec call."""
        with self._on_stream():
            codes = frames.to(self.device).transpose(1, 2)
            audio = self.tokenizer.decode(codes, return_dict=False)
            return list(audio[:, 0].float().cpu().numpy())
