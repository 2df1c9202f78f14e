"""The playground and the spec's JavaScript client in a real browser: Debian's Chromium, headless, driven by
Playwright, against `python api_server.py` (real gunicorn) on loopback."""

from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import sync_playwright

from harness import start_server
from helpers import EXAMPLES, make_app, write_voice

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, no sandbox (root in CI), and none of Chromium's own network chatter on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--autoplay-policy=no-user-gesture-required"]
SETTLED = "window.playground.done !== null || window.playground.result !== null || window.playground.error !== null"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    srv = start_server(tiny_checkpoint, tmp_path_factory.mktemp("browser"), "--max-new-tokens", "600")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context()
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/playground")
    page.wait_for_function("window.playground.ready === true")
    page.fill("#max_new_tokens", "80")
    page.fill("#temperature", "0")
    yield page
    context.close()
    assert errors == []


def test_the_page_lists_voices_and_scenes(page):
    voices = page.eval_on_selector_all("#voice option", "options => options.map(o => o.value)")
    assert "belinda" in voices and "" in voices  # "" = smart voice
    assert page.eval_on_selector("#scene", "s => s.value") == "quiet_indoor"


def test_generate_plays_the_wav(page):
    page.select_option("#voice", "belinda")
    page.click("#generate")
    page.wait_for_function(SETTLED)
    state = page.evaluate("window.playground")
    assert state["error"] is None and state["result"]["success"] is True
    # The browser decoded the WAV: the player's duration is the server's.
    page.wait_for_function("document.getElementById('player').duration > 0")
    duration = page.evaluate("document.getElementById('player').duration")
    assert abs(duration - state["result"]["duration"]) <= 0.05
    assert page.text_content("#status").startswith("done:")


def test_stream_plays_pcm_as_it_arrives_and_shows_time_to_first_audio(page):
    page.fill("#max_new_tokens", "300")
    page.click("#stream")
    page.wait_for_function(SETTLED, timeout=120_000)
    state = page.evaluate("window.playground")
    assert state["error"] is None, state["error"]
    events = state["events"]
    assert events[0] == "start" and events[-1] == "done" and events.count("audio") >= 3
    assert state["streamedSamples"] == round(state["done"]["duration"] * 24000)
    assert page.text_content("#ttfa").endswith(" ms") and 0 < state["firstAudioMs"]
    # Web Audio scheduled the pieces back to back and the context is playing them.
    assert page.evaluate("window.playground.audioContext.state") == "running"


def test_upload_a_reference_clip_and_generate(page, tmp_path):
    clip = write_voice(tmp_path, "mine", seconds=1.5)
    page.set_input_files("#ref_file", str(clip))
    page.fill("#ref_text", "Reference words.")
    with page.expect_response("**/generate-upload") as response:
        page.click("#generate")
    assert response.value.status == 200
    page.wait_for_function(SETTLED)
    assert page.evaluate("window.playground.result.duration") > 0


def test_a_bad_value_shows_the_servers_message(page):
    page.fill("#top_k", "5000")
    page.click("#generate")
    page.wait_for_function(SETTLED)
    assert "top_k" in page.text_content("#status") and "error" in page.get_attribute("#status", "class")


@pytest.fixture
def other_origin():
    """examples/ served by a plain static server on another port: a different origin from the API."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(EXAMPLES))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()


def test_spec_javascript_client_from_another_origin_works_through_cors(browser, server, other_origin):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{other_origin}/javascript_client.html")
    page.fill("#server", server.url)  # http://127.0.0.1:PORT: another origin than http://localhost:OTHER
    with page.expect_response(f"{server.url}/generate") as response:
        page.click("#go")
    assert response.value.headers["access-control-allow-origin"] in ("*", other_origin)
    page.wait_for_function("document.getElementById('status').textContent !== ''", timeout=120_000)
    assert page.text_content("#status").startswith("ok:")
    context.close()


def test_the_page_loads_without_the_api_key(tmp_path, engine):
    client = make_app(tmp_path, engine, api_key="sk-test").test_client()
    page = client.get("/playground")
    assert page.status_code == 200 and b"Higgs Audio playground" in page.data
    assert client.get("/").headers["Location"].endswith("playground")
    assert client.get("/voices").status_code == 401  # the API behind it still wants the key
