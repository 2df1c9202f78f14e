"""Settings: overrides must name real settings; a HIGGS_* variable nobody reads is named at start-up with the closest
known name (a typo would otherwise leave the default in force without a word)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.settings import Settings
from helpers import ROOT, make_app


def test_an_unknown_override_is_refused():
    with pytest.raises(TypeError, match="max_text_char"):
        Settings.from_env(environ={}, overrides={"max_text_char": 5})
    assert Settings.from_env(environ={}, overrides={"max_text_chars": 5}).max_text_chars == 5


def test_unknown_variables_are_named_with_the_closest_setting():
    environ = {"HIGGS_MAX_TEXT_CHAR": "10", "HIGGS_PORT": "9000", "HIGGS_TEST_DEVICE": "cuda", "HIGGS_ZZZ": "1",
               "PATH": "/bin"}
    assert Settings.unknown_variables(environ) == [("HIGGS_MAX_TEXT_CHAR", "HIGGS_MAX_TEXT_CHARS"),
                                                   ("HIGGS_ZZZ", None)]


def test_the_server_warns_at_start_up(tmp_path):
    """In a process of its own, as a server starts: the warning reaches stderr and the log file."""
    # PYTHONPATH extended, not replaced: `make gpu-check` finds the server's packages through it (pip --target)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HIGGS_MAX_TEXT_CHAR": "10", "HIGGS_LOG_FILE": str(tmp_path / "api_server.log"),
           "HIGGS_MODEL_PATH": str(tmp_path / "missing"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", "from app import create_app; create_app()"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = "HIGGS_MAX_TEXT_CHAR is not a setting this server knows: it has no effect; did you mean " \
               "HIGGS_MAX_TEXT_CHARS?"
    assert expected in done.stderr and expected in (tmp_path / "api_server.log").read_text()


def test_tests_cannot_pass_a_misspelt_override(tmp_path, engine):
    with pytest.raises(TypeError):
        make_app(tmp_path, engine, max_text_char=5)
