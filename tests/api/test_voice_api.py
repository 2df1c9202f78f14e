"""The voice library API: add, fetch, replace and delete voices; atomic and safe under concurrency."""

from __future__ import annotations

import io
import shutil
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import EXAMPLES, make_app
from model_pool.prompt.planner import AudioSource


def wav(seconds=1.0, rate=24000, freq=220.0, channels=1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture
def voices_dir(tmp_path):
    d = tmp_path / "voices"
    shutil.copytree(EXAMPLES / "voice_prompts", d)
    return d


@pytest.fixture
def client(tmp_path, engine, voices_dir):
    return make_app(tmp_path, engine, voice_prompts_dir=str(voices_dir)).test_client()


def upload(client, name, data, transcript="Hello there.", **extra):
    form = {"name": name, "transcript": transcript, "audio": (io.BytesIO(data), "clip.wav"), **extra}
    return client.post("/voices", data=form, content_type="multipart/form-data")


def test_add_list_fetch_use_and_delete(client, voices_dir):
    r = upload(client, "new_voice", wav(2.0, rate=44100, channels=2))
    assert r.status_code == 201 and r.json["name"] == "new_voice" and r.json["type"] == "wav"
    assert "new_voice" in [v["name"] for v in client.get("/voices").json["voices"]]
    audio = client.get("/voices/new_voice/audio")
    data, rate = sf.read(io.BytesIO(audio.data))
    assert audio.status_code == 200 and rate == 24000 and data.ndim == 1 and len(data) == 48000
    assert (voices_dir / "new_voice.txt").read_text() == "Hello there.\n"
    gen = client.post("/generate", json={"text": "Hi", "ref_audio": "new_voice", "max_new_tokens": 20})
    assert gen.status_code == 200
    assert client.delete("/voices/new_voice").status_code == 204
    assert client.get("/voices/new_voice/audio").status_code == 404
    assert client.post("/generate", json={"text": "Hi", "ref_audio": "new_voice"}).status_code == 404
    assert client.delete("/voices/new_voice").status_code == 404


def voice_codes(engine, voices_dir, name):
    return engine.codes_for(AudioSource(path=str(voices_dir / f"{name}.wav"), voice=name))


def test_conflict_unless_overwrite_and_the_new_audio_is_used(client, engine, voices_dir):
    assert upload(client, "v1", wav(freq=200)).status_code == 201
    body = {"text": "Hi", "ref_audio": "v1", "max_new_tokens": 30, "seed": 1}
    before = client.post("/generate", json=body).json["audio_base64"]
    old_codes = voice_codes(engine, voices_dir, "v1")
    again = upload(client, "v1", wav(freq=900))
    assert again.status_code == 409 and "overwrite" in again.json["message"]
    assert upload(client, "v1", wav(freq=900), overwrite="true").status_code == 201  # the same length
    new_codes = voice_codes(engine, voices_dir, "v1")
    assert new_codes.shape == old_codes.shape and not torch.equal(new_codes, old_codes)
    assert torch.equal(new_codes, engine.codec.encode(sf.read(voices_dir / "v1.wav", dtype="float32")[0]))
    after = client.post("/generate", json=body).json["audio_base64"]
    assert before != after  # the cached codes of the old clip were not reused


def test_each_voice_clones_its_own_codes(client):
    """Two voices of the same length, the same seed: each request's audio is its own voice's, again and again."""
    assert upload(client, "low", wav(freq=180)).status_code == 201
    assert upload(client, "high", wav(freq=700)).status_code == 201

    def clone(name):
        body = {"text": "Hi", "ref_audio": name, "max_new_tokens": 30, "seed": 5}
        return client.post("/generate", json=body).json["audio_base64"]

    low, high = clone("low"), clone("high")
    assert low != high
    assert clone("low") == low and clone("high") == high


@pytest.mark.parametrize("name, data, transcript, status, field", [
    ("../evil", wav(), "x", 400, "name"),
    ("bad name", wav(), "x", 400, "name"),
    ("ok", b"not audio at all", "x", 400, "audio"),
    ("ok", wav(), "", 422, "transcript"),
    ("ok", wav(seconds=6.0), "x", 400, "audio"),
])
def test_bad_uploads(client, voices_dir, name, data, transcript, status, field):
    r = upload(client, name, data, transcript)
    assert r.status_code == status and r.json["field"] == field
    assert not list(voices_dir.glob("ok.*")) and not list(voices_dir.glob(".*tmp"))


def test_concurrent_uploads_of_one_name_leave_one_whole_voice(client, voices_dir):
    clips = {i: wav(seconds=1.0 + 0.25 * i, freq=150 + 100 * i) for i in range(6)}
    barrier = threading.Barrier(len(clips))
    statuses = []

    def put(i):
        barrier.wait()
        statuses.append(upload(client, "race", clips[i], transcript=f"take {i}", overwrite="true").status_code)

    threads = [threading.Thread(target=put, args=(i,)) for i in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * len(clips)
    winner = int((voices_dir / "race.txt").read_text().split()[-1])
    stored, _ = sf.read(voices_dir / "race.wav", dtype="int16")
    expected, _ = sf.read(io.BytesIO(clips[winner]), dtype="int16")
    assert np.array_equal(stored, expected)  # the audio belongs to the same upload as the transcript
    assert not [p for p in voices_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_crash_while_writing_leaves_the_old_voice(client, voices_dir, monkeypatch):
    assert upload(client, "steady", wav(freq=300), transcript="Old words.").status_code == 201
    old_audio = (voices_dir / "steady.wav").read_bytes()
    new_clip = wav(freq=800)

    def crash(path, *args, **kwargs):
        with open(path, "wb") as half:  # half a file written, then the disk fills up
            half.write(b"RIFF\0\0")
        raise OSError("disk full")

    import model_pool.prompt.library as library

    monkeypatch.setattr(library.sf, "write", crash)
    r = upload(client, "steady", new_clip, transcript="New words.", overwrite="true")
    assert r.status_code == 500
    assert (voices_dir / "steady.wav").read_bytes() == old_audio
    assert (voices_dir / "steady.txt").read_text() == "Old words.\n"
    assert not [p for p in voices_dir.iterdir() if p.name.endswith(".tmp")]


def test_shipped_voices_say_they_are_synthetic_and_uploads_are_not(client, voices_dir):
    listed = {v["name"]: v for v in client.get("/voices").json["voices"]}
    for name in ("belinda", "en_woman", "en_man", "broom_salesman", "zh_man_sichuan"):
        entry = listed[name]
        assert entry["synthetic"] is True and "espeak-ng" in entry["source"]
        assert entry["file"] == f"{voices_dir}/{name}.wav" and entry["type"] == "wav"  # the spec's fields
    assert upload(client, "recorded", wav()).json["synthetic"] is False
    assert upload(client, "belinda", wav(), overwrite="true").status_code == 201  # a real recording replaces it
    listed = {v["name"]: v for v in client.get("/voices").json["voices"]}
    assert listed["belinda"]["synthetic"] is False and not (voices_dir / "belinda.json").exists()
    openai = {v["id"]: v for v in client.get("/v1/audio/voices").json["data"]}
    assert openai["en_man"]["synthetic"] is True and openai["belinda"]["synthetic"] is False


def test_voice_files_are_0644_and_no_lock_files_are_left(client, voices_dir):
    for i in range(3):
        assert upload(client, f"v{i}", wav(), overwrite="true").status_code == 201
    assert client.delete("/voices/v0").status_code == 204
    for suffix in ("wav", "txt"):
        assert (voices_dir / f"v1.{suffix}").stat().st_mode & 0o777 == 0o644
    assert not [p.name for p in voices_dir.iterdir() if p.name.startswith(".")]


def test_names_must_match_whole(client, voices_dir):
    r = upload(client, "evil2\n", wav())
    assert r.status_code == 400 and r.json["field"] == "name"
    assert not [p for p in voices_dir.iterdir() if "evil2" in p.name]
    assert client.get("/voices/evil2%0A/audio").status_code == 400
