"""--quantization at start-up: a bad value stops the server before it starts; a quantization the device cannot run
fails the load at once (no weight read) and the server explains it in /info, /readyz and the log."""

from __future__ import annotations

import pytest

from api_server import parse_args
from app.settings import Settings
from helpers import make_app


def test_the_flag_and_the_variable_reach_the_settings():
    settings, _ = parse_args(["--quantization", "int8"])
    assert settings.quantization == "int8" and settings.environ()["HIGGS_QUANTIZATION"] == "int8"
    assert Settings.from_env(environ={"HIGGS_QUANTIZATION": " INT4 "}).quantization == "int4"
    assert Settings.from_env(environ={}).quantization == "none"


def test_a_bad_value_is_a_start_up_error_that_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        Settings.from_env(environ={"HIGGS_QUANTIZATION": "int3"})
    assert str(info.value) == "invalid value for HIGGS_QUANTIZATION: 'int3' (expected none, int8, fp8, int4)"
    with pytest.raises(SystemExit):
        parse_args(["--quantization", "int3"])
    assert "invalid choice: 'int3'" in capsys.readouterr().err


def test_a_quantization_the_device_cannot_run_is_explained_and_nothing_is_loaded(tmp_path, tiny_checkpoint):
    app = make_app(tmp_path, model_path=str(tiny_checkpoint / "model"),
                   audio_tokenizer_path=str(tiny_checkpoint / "audio_tokenizer"), device="cpu", quantization="int4")
    c = app.test_client()
    info = c.get("/info").json
    assert info["quantization"] == "int4" and info["is_loaded"] is False
    assert "--quantization int4 needs a CUDA GPU" in info["load_error"] and "int8" in info["load_error"]
    ready = c.get("/readyz")
    assert ready.status_code == 503 and "int4 needs a CUDA GPU" in ready.json["reason"]
    r = c.post("/generate", json={"text": "Hi"})
    assert r.status_code == 503 and "Retry-After" not in r.headers
    assert "int4 needs a CUDA GPU" in (tmp_path / "api_server.log").read_text()
