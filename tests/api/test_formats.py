"""Response formats and speed: every format decoded back (PyAV) at the right rate and duration."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from app.serving.encoder import FORMATS, StreamEncoder, encode_file
from helpers import decode_audio, make_app

RATE = 24000
TONE = (0.3 * np.sin(np.arange(RATE * 2 + 777) / RATE * 2 * np.pi * 440)).astype(np.float32)


def _stream(samples, fmt, speed=1.0, piece=2400):
    encoder = StreamEncoder(fmt, speed)
    parts = [encoder.push(samples[i:i + piece]) for i in range(0, samples.shape[0], piece)]
    return parts, parts + [encoder.finish()]


def _pitch(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum)) * RATE / samples.shape[0]


def stated_rate(fmt: str) -> int | None:
    """The rate a decoder reads from the file: 24 kHz, except raw pcm, which states none."""
    return None if fmt == "pcm" else RATE


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_whole_files_decode_to_the_same_rate_and_duration(fmt):
    data, mime = encode_file(TONE, fmt)
    rate, seconds = decode_audio(data, fmt)
    assert rate == stated_rate(fmt) and mime.startswith("audio/")
    assert abs(seconds - TONE.shape[0] / RATE) <= 0.05


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_streamed_files_grow_piece_by_piece_and_decode(fmt):
    before_finish, parts = _stream(TONE, fmt)
    # Bytes come out while audio is still being pushed, not only at the end.
    assert sum(1 for part in before_finish if part) >= len(before_finish) // 2
    rate, seconds = decode_audio(b"".join(parts), fmt)
    assert rate == stated_rate(fmt)
    # mp3 and aac streams cannot mark the encoder's priming: decoders play up to ~70 ms more.
    slack = 0.1 if fmt in ("mp3", "aac") else 0.05
    assert -0.05 <= seconds - TONE.shape[0] / RATE <= slack


def test_lossless_formats_keep_the_samples():
    pcm = np.round(np.clip(TONE, -1, 1) * 32767).astype(np.int16)
    for fmt in ("wav", "flac"):
        data, _ = encode_file(TONE, fmt)
        decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
        assert rate == RATE and np.array_equal(decoded, pcm)
    _, parts = _stream(TONE, "pcm")
    assert np.array_equal(np.frombuffer(b"".join(parts), "<i2"), pcm)


@pytest.mark.parametrize("speed", [0.25, 0.5, 1.5, 2.0, 4.0])
def test_speed_changes_duration_not_pitch(speed):
    expected = TONE.shape[0] / RATE / speed
    tolerance = max(0.05, 0.01 * expected)  # atempo's last analysis window: well under 1%
    data, _ = encode_file(TONE, "wav", speed)
    stretched, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert abs(stretched.shape[0] / RATE - expected) <= tolerance
    assert abs(_pitch(stretched) - 440.0) <= 3.0  # a resampling speed-up would move it to 440 * speed
    _, parts = _stream(TONE, "pcm", speed)
    assert abs(len(b"".join(parts)) / 2 / RATE - expected) <= tolerance


@pytest.fixture(scope="module")
def client(tmp_path_factory, engine):
    return make_app(tmp_path_factory.mktemp("formats"), engine).test_client()


def test_generate_default_is_wav_and_every_format_matches_it(client):
    body = {"text": "Formats everywhere.", "temperature": 0, "max_new_tokens": 40}
    reference = client.post("/generate", json=body).json
    assert reference["response_format"] == "wav" and reference["content_type"] == "audio/wav"
    wav = base64.b64decode(reference["audio_base64"])
    assert wav[:4] == b"RIFF" and decode_audio(wav, "wav") == (RATE, reference["duration"])
    for fmt in FORMATS:
        result = client.post("/generate", json={**body, "response_format": fmt}).json
        assert result["response_format"] == fmt and result["duration"] == reference["duration"]
        rate, seconds = decode_audio(base64.b64decode(result["audio_base64"]), fmt)
        assert rate == stated_rate(fmt) and abs(seconds - reference["duration"]) <= 0.05, fmt


def test_generate_upload_takes_response_format(client):
    clip = io.BytesIO()
    sf.write(clip, TONE[:RATE], RATE, format="WAV")
    form = {"text": "Cloned.", "temperature": "0", "max_new_tokens": "30", "response_format": "flac",
            "ref_audio_file": (io.BytesIO(clip.getvalue()), "ref.wav")}
    response = client.post("/generate-upload", data=form, content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    result = response.json
    assert result["content_type"] == "audio/flac"
    rate, seconds = decode_audio(base64.b64decode(result["audio_base64"]), "flac")
    assert rate == RATE and abs(seconds - result["duration"]) <= 0.05


def test_unknown_format_is_a_422_naming_the_field(client):
    response = client.post("/generate", json={"text": "x", "response_format": "ogg-vorbis"})
    assert response.status_code == 422 and response.json["field"] == "response_format"


def test_wav_has_the_plain_44_byte_header():
    data, _ = encode_file(TONE, "wav")
    assert data[:4] == b"RIFF" and data[36:40] == b"data" and len(data) == 44 + TONE.shape[0] * 2
