"""The tiny checkpoint's codec hears the difference between clips and speaks the difference between codes, so a
test that clones the wrong voice, or reuses stale codes, fails."""

from __future__ import annotations

import itertools

import numpy as np
import torch

RATE = 24000
T = np.arange(2 * RATE) / RATE
CLIPS = {
    "220 Hz": 0.3 * np.sin(2 * np.pi * 220 * T),
    "880 Hz": 0.3 * np.sin(2 * np.pi * 880 * T),
    "noise": 0.3 * np.random.default_rng(0).standard_normal(T.shape),
    "chirp": 0.3 * np.sin(2 * np.pi * (100 * T + 975 * T**2)),  # 100 Hz up to 4 kHz
}


def test_different_clips_encode_to_different_codes(engine):
    codes = {name: engine.codec.encode(clip.astype(np.float32)) for name, clip in CLIPS.items()}
    for a, b in itertools.combinations(codes, 2):
        same_frames = (codes[a] == codes[b]).all(dim=1).float().mean().item()
        assert same_frames < 0.1, f"{a} and {b} share {same_frames:.0%} of their frames"
    distinct = [len(set(codes["chirp"][:, k].tolist())) for k in range(8)]
    assert min(distinct) >= 15, f"a chirp uses only {distinct} codes per codebook in 50 frames"


def test_decoded_audio_depends_on_every_codebook_within_the_decoders_reach(engine):
    codes = engine.codec.encode(CLIPS["chirp"].astype(np.float32))
    audio = engine.codec.decode(codes)
    assert 0.01 < np.abs(audio).max() < 1.0
    for k in range(8):
        changed = codes.clone()
        changed[25, k] = (changed[25, k] + 1) % 1024
        diff = np.abs(engine.codec.decode(changed) - audio)
        assert diff.max() > 1e-3 * np.abs(audio).max(), f"codebook {k} is not heard"
        reach = np.flatnonzero(diff > 1e-6 * np.abs(audio).max()) / 960
        assert 14 <= reach.min() and reach.max() < 36, f"codebook {k}: frames {reach.min()}..{reach.max()}"
    assert torch.equal(engine.codec.encode(CLIPS["chirp"].astype(np.float32)), codes)  # deterministic
