"""The shape of the audio codes a checkpoint produces, read from its config once: what the batch loop, the sampler
and the stream decoder need to know about the model, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeGeometry:
    num_codebooks: int  # codes per frame (the codec's quantizers)
    codebook_size: int  # codes per codebook, stream begin and end included (Higgs v2: 1024 + 2)
    bos_id: int  # the stream-begin code
    eos_id: int  # the stream-end code

    @classmethod
    def of(cls, config) -> CodeGeometry:
        return cls(config.num_codebooks, config.codebook_size, config.audio_stream_bos_id,
                   config.audio_stream_eos_id)
