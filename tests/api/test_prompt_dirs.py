"""The voice and scene directories from any working directory (issue 31): the spec's relative defaults are looked
up in the working directory, then in the project's; the log says which directories hold what; a directory given
explicitly that does not exist is warned about."""

from __future__ import annotations

import logging

import pytest

from app.prompt_dirs import DEFAULTS
from helpers import EXAMPLES, make_app, write_voice
from model_pool.prompt.library import VoiceLibrary

SPEC_DIRS = {"voice_prompts_dir": "examples/voice_prompts", "scene_prompts_dir": "examples/scene_prompts"}
SHIPPED_VOICES = sorted(p.stem for p in (EXAMPLES / "voice_prompts").glob("*.wav"))
SHIPPED_PROFILES = len(VoiceLibrary(EXAMPLES / "voice_prompts").profiles())
SHIPPED_SCENES = sorted(p.stem for p in (EXAMPLES / "scene_prompts").glob("*.txt"))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory that is not the project's (`cd /srv`)."""
    cwd = tmp_path / "srv"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def messages(caplog, level=logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "higgs.runtime" and r.levelno == level]


def test_the_spec_s_defaults_are_the_settings_defaults():
    assert {name: DEFAULTS[name] for name in SPEC_DIRS} == SPEC_DIRS


def test_started_elsewhere_the_defaults_are_found_in_the_project(elsewhere, tmp_path, engine, caplog):
    assert len(SHIPPED_VOICES) >= 5 and SHIPPED_PROFILES >= 1 and len(SHIPPED_SCENES) >= 4
    with caplog.at_level(logging.INFO, logger="higgs.runtime"):
        client = make_app(tmp_path, engine, **SPEC_DIRS).test_client()
    voices = client.get("/voices").json["voices"]
    assert [v["name"] for v in voices] == SHIPPED_VOICES
    assert all(v["file"] == str(EXAMPLES / "voice_prompts" / f"{v['name']}.wav") for v in voices)  # a real path
    assert [s["name"] for s in client.get("/scenes").json["scenes"]] == SHIPPED_SCENES
    assert client.post("/generate", json={"text": "Hi.", "ref_audio": "belinda", "max_new_tokens": 20,
                                          "scene_prompt": "city_street"}).status_code == 200
    logged = messages(caplog)
    assert f"voices from {EXAMPLES / 'voice_prompts'}: {len(SHIPPED_VOICES)} (and {SHIPPED_PROFILES} profiles)" in logged, logged
    assert f"scenes from {EXAMPLES / 'scene_prompts'}: {len(SHIPPED_SCENES)}" in logged, logged
    assert messages(caplog, logging.WARNING) == []


def test_the_working_directory_comes_first(elsewhere, tmp_path, engine, caplog):
    own = elsewhere / "examples" / "voice_prompts"
    own.mkdir(parents=True)
    write_voice(own, "local_voice")
    with caplog.at_level(logging.INFO, logger="higgs.runtime"):
        client = make_app(tmp_path, engine, **SPEC_DIRS).test_client()
    voices = client.get("/voices").json["voices"]
    assert voices == [{"name": "local_voice", "file": "examples/voice_prompts/local_voice.wav", "type": "wav",
                       "synthetic": False}]  # the spec's listing: the path as configured
    assert f"voices from {own}: 1 (and 0 profiles)" in messages(caplog)
    assert len(client.get("/scenes").json["scenes"]) == len(SHIPPED_SCENES)  # none here: the project's


def test_a_directory_given_explicitly_that_does_not_exist_is_warned_about(elsewhere, tmp_path, engine, caplog):
    with caplog.at_level(logging.INFO, logger="higgs.runtime"):
        client = make_app(tmp_path, engine, voice_prompts_dir="my_voices", scene_prompts_dir="my_scenes").test_client()
    assert client.get("/voices").json["count"] == 0 and client.get("/scenes").json["count"] == 0  # not the project's
    assert messages(caplog, logging.WARNING) == [
        f"voices: {elsewhere / 'my_voices'} (--voice-prompts-dir) does not exist: no voices until it does; "
        "POST /voices creates it",
        f"scenes: {elsewhere / 'my_scenes'} (--scene-prompts-dir) does not exist: no scenes until it does"]
