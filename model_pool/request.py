"""Plain request objects passed from the HTTP layer to the engine. No torch, no Flask."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .defaults import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SCENE

SAMPLE_RATE = 24000
FRAME_RATE = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FRAME_RATE
CHUNK_METHODS = ("speaker", "word")  # long-form splitting; None keeps the text whole


@dataclass(frozen=True)
class SamplingParams:
    """The sampling fields and their defaults (the HTTP schemas take their defaults from here)."""

    temperature: float = 0.7  # 0 means greedy
    top_k: int | None = 50
    top_p: float | None = 0.95
    seed: int | None = None
    ras_win_len: int | None = 7  # 0 or None turns RAS off
    ras_win_max_num_repeat: int = 2
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = 0  # the stream-end code is suppressed before this step (benchmarks)
    runaway_guard: bool = True  # False: the runaway guard (model_pool/guard.py) leaves this request alone
    # Not a sampling field: how many frames the first audio piece holds (the client's initial_codec_chunk_frames);
    # it rides here because every generation carries its SamplingParams to where its frames become audio. None:
    # the stream decoder's own schedule (a small first piece, so audio starts early); 0: no smaller first piece
    # (the first is as large as the second).
    first_chunk_frames: int | None = None


@dataclass
class ReferenceClip:
    """A caller-supplied reference: mono float32 samples at 24 kHz (model_pool.audio.decode_clip), and its
    transcript if known."""

    samples: np.ndarray
    transcript: str | None = None


@dataclass
class GenerationRequest:
    text: str
    ref_audio: str | None = None  # "belinda", "belinda,en_man", "profile:NAME"
    ref_clip: ReferenceClip | None = None
    voice_description: str | None = None  # a designed voice: "a warm, deep male voice" (as profile:NAME's text)
    scene_prompt: str | None = DEFAULT_SCENE  # a scene name, free text, or empty
    sampling: SamplingParams = field(default_factory=SamplingParams)
    chunk_method: str | None = None
    chunk_max_word_num: int = 200
    chunk_max_num_turns: int = 1
    generation_chunk_buffer_size: int | None = None
    names: dict[str, str] = field(default_factory=dict)  # our field -> the client's name for it (errors use it)

    def name(self, field_name: str) -> str:
        return self.names.get(field_name, field_name)
