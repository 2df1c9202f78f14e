"""A newcomer's first hour (issue 23), end to end: the spec's test client, `python api_server.py` outside the venv,
`make run` without the model hub, the demo's defaults and what git sees after the examples ran."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import requests
import soundfile as sf

from harness import EXAMPLES, ROOT, free_port, get_json, start_server, wait_until
from helpers import decode_audio


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """Started from a directory of its own with the spec's default voice and scene directories."""
    srv = start_server(tiny_checkpoint, tmp_path_factory.mktemp("newcomer"), "--max-new-tokens", "400",
                       examples=False)
    yield srv
    srv.stop(wait=False)


def test_started_from_another_directory_the_server_lists_the_example_voices(server):
    """`cd /srv && python /opt/higgs-audio-server/api_server.py`: the spec's relative defaults are found in the
    project's directory, and the log says where and how many."""
    assert server.log_dir != ROOT and not (server.log_dir / "examples").exists()
    voices = get_json(server.url, "/voices")["voices"]
    assert [v["name"] for v in voices] == sorted(p.stem for p in (EXAMPLES / "voice_prompts").glob("*.wav"))
    assert voices[0]["file"] == str(EXAMPLES / "voice_prompts" / f"{voices[0]['name']}.wav")
    scenes = get_json(server.url, "/scenes")["scenes"]
    assert [s["name"] for s in scenes] == sorted(p.stem for p in (EXAMPLES / "scene_prompts").glob("*.txt"))
    log = server.log()
    assert f"voices from {EXAMPLES / 'voice_prompts'}: {len(voices)} (and " in log
    assert f"scenes from {EXAMPLES / 'scene_prompts'}: {len(scenes)}" in log
    r = requests.post(f"{server.url}/generate", json={"text": "Hi.", "ref_audio": "belinda", "max_new_tokens": 20,
                                                      "scene_prompt": "concert_hall"}, timeout=60)
    assert r.status_code == 200, r.text


def test_the_test_client_times_the_first_audio_before_the_stream_ends(server):
    sys.path.insert(0, str(ROOT))
    import test_client

    with requests.Session() as session:
        result = test_client.stream(session, server.url, {"text": "Streaming test.", "max_new_tokens": 400,
                                                          "seed": 99, "runaway_guard": False})
    assert result.events[0] == "start" and result.events[-1] == "done"
    # 400 steps in all, the first audio after 20: it must arrive early, not when the whole body has been read.
    assert result.first_audio_s < result.total_s / 2, (result.first_audio_s, result.total_s)


def test_api_server_outside_the_venv_says_how_to_start_before_announcing(tmp_path):
    """`python -S` has none of the venv's packages, like a bare `python` outside it."""
    done = subprocess.run([sys.executable, "-S", str(ROOT / "api_server.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "Serving on" not in done.stderr + done.stdout
    assert "gunicorn" in done.stderr and "make run" in done.stderr and ".venv/bin/python" in done.stderr


def test_without_the_hub_the_load_fails_in_seconds_once_and_clearly(tmp_path):
    """`make run` (the hub ids, --device auto) where the hub cannot be resolved: no minute of retries, no warning
    printed twice, a message without '..', the device in use, and a 503 that does not invite a retry."""
    port, url = free_port(), None
    env = {**os.environ, "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_ENDPOINT": "https://hub.invalid",
           "HF_HOME": str(tmp_path / "hf"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    cmd = [sys.executable, str(ROOT / "api_server.py"), "--host", "127.0.0.1", "--port", str(port),
           "--log-file", str(tmp_path / "api_server.log"), "--voice-prompts-dir", str(EXAMPLES / "voice_prompts"),
           "--scene-prompts-dir", str(EXAMPLES / "scene_prompts")]
    with open(tmp_path / "stderr.log", "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}"
        info = wait_until(lambda: (i := get_json(url, "/info")) and i["load_error"] and i, 90, "the load to fail")
        log = (tmp_path / "stderr.log").read_text()
        assert "Retrying" not in log  # the hub client's backoff (about a minute) never started
        assert log.count("the model hub https://hub.invalid cannot be reached") == 1  # the warning, once
        assert "the model hub cannot be reached" in info["load_error"] and ".." not in info["load_error"]
        assert info["device"] == "cpu" and info["is_loaded"] is False
        r = requests.post(f"{url}/generate", json={"text": "Hi."}, timeout=10)
        assert r.status_code == 503 and "Retry-After" not in r.headers
    finally:
        proc.terminate()
        proc.wait(60)


def test_make_demo_starts_with_the_readme_s_max_new_tokens_and_args_override_it():
    makefile = (ROOT / "Makefile").read_text()
    default = re.search(r"^DEMO_MAX_NEW_TOKENS := (\d+)$", makefile, re.M).group(1)
    assert f"`--max-new-tokens {default}`" in (ROOT / "README.md").read_text()
    dry = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert re.findall(r"--max-new-tokens (\d+)", dry) == [default]
    dry = subprocess.run(["make", "-n", "demo", "ARGS=--max-new-tokens 2048 --port 9000"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    assert re.findall(r"--max-new-tokens (\d+)", dry)[-1] == "2048"  # the last one given wins


def test_git_ignores_what_the_examples_write_and_keeps_the_shipped_voices():
    def ignored(*paths: str) -> set[str]:
        done = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, capture_output=True,
                              text=True, input="\n".join(paths), timeout=30)
        return set(done.stdout.split())

    added = ["examples/voice_prompts/alice.wav", "examples/voice_prompts/alice.txt", "output.wav", "hello.mp3"]
    assert ignored(*added) == set(added)  # POST /voices and the README's examples leave git status clean
    shipped = subprocess.run(["git", "ls-files", "examples/voice_prompts"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30).stdout.split()
    assert shipped and not ignored(*shipped)


def test_the_readme_s_hello_world_writes_files_that_play(server, tmp_path):
    """The README's hello-world block, run as written (only the address changed): hello.wav and hello.mp3."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Hello world"):]
    begin = section.index("```bash\n") + len("```bash\n")
    script = section[begin:section.index("```", begin)].replace("http://localhost:8000", server.url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    wav = sf.info(tmp_path / "hello.wav")
    assert wav.samplerate == 24000 and wav.channels == 1 and wav.frames > 24000
    rate, seconds = decode_audio((tmp_path / "hello.mp3").read_bytes(), "mp3")
    assert rate == 24000 and abs(seconds - wav.frames / 24000) < 0.1
