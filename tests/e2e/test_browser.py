"""The playground and the spec's JavaScript client in a real browser: Debian's Chromium, headless, driven by
Playwright, against `python api_server.py` (real gunicorn) on loopback. The playground's takes, voices, realtime
and deployment tests (test_playground_*.py) share the page helpers in pages.py."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import EXAMPLES, make_app, write_voice
from pages import (
    INK,
    assert_drawn,
    confine,
    drawn_take_showing,
    playground_page,
    playground_server,
    take,
    wait_for_take,
)

server = pytest.fixture(playground_server)
page = pytest.fixture(playground_page)


def test_the_page_lists_voices_and_scenes(page):
    voices = page.eval_on_selector_all("#voice option", "options => options.map(o => o.value)")
    assert "belinda" in voices and "" in voices  # "" = smart voice
    assert "profile:male_en" in voices  # the described voices of profile.yaml
    assert page.eval_on_selector("#scene", "s => s.value") == "quiet_indoor"
    assert page.locator("#voice_list li[data-voice=belinda] .badge").text_content() == "synthetic"


def test_generate_adds_a_take_with_its_waveform_and_settings(page):
    page.select_option("#voice", "belinda")
    page.click("#generate")
    card = wait_for_take(page, 1)
    meta = card.locator(".take-meta").text_content()
    assert "voice belinda" in meta and "scene quiet_indoor" in meta and "greedy" in meta
    assert " s · first audio " in meta and meta.endswith("(whole file)")
    assert "temperature 0 · top-k 50 · top-p 0.95 · max 80 tokens" in card.locator(".take-sampling").text_content()
    assert card.locator(".take-text").text_content() == page.input_value("#text")
    assert_drawn(card)
    assert page.text_content("#status").startswith("done:")


def test_stream_grows_the_waveform_as_audio_arrives_then_shows_time_to_first_audio(page):
    page.fill("#max_new_tokens", "400")
    page.click("#stream")
    card = take(page, 1)
    # While it streams: part of the waveform is drawn, the progress says how far the tokens got.
    partly = f"""() => {{
      const card = document.querySelector('#take_list > li[data-take="1"]');
      if (!card || !card.classList.contains('running')) return false;
      const drawn = ({INK})(card.querySelector('canvas'));
      return drawn.columns > 0 && drawn.columns < 0.8 * drawn.width;
    }}"""
    page.wait_for_function(partly, timeout=60_000)
    assert " of 400 tokens" in card.locator(".take-progress span").text_content()
    wait_for_take(page, 1)
    assert_drawn(card)
    assert card.locator(".take-progress").is_hidden()
    meta = card.locator(".take-meta").text_content()
    assert " s · first audio " in meta and " ms" in meta and "whole file" not in meta
    # Web Audio is playing the pieces back to back.
    assert page.evaluate("window.playground.stream.context.state") == "running"


def test_upload_a_reference_clip_and_generate(page, tmp_path):
    clip = write_voice(tmp_path, "mine", seconds=1.5)
    page.click("#clip_box summary")
    page.set_input_files("#ref_file", str(clip))
    page.fill("#ref_text", "Reference words.")
    assert "clip file is cloned" in page.text_content("#voice_note")
    with page.expect_response("**/generate-upload") as response:
        page.click("#generate")
    assert response.value.status == 200
    drawn_take_showing(page, 1, ".take-meta", "clip mine.wav")


def test_a_bad_value_shows_the_servers_message_and_adds_no_take(page):
    page.fill("#top_k", "5000")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "top_k" in page.text_content("#status")
    assert page.locator("#take_list > li").count() == 0


def test_every_asset_comes_from_the_server_and_nothing_else_is_asked_for(browser, server):
    context = browser.new_context()
    outside = confine(context, server.url)
    assets = []
    context.on("request", lambda request: "asset=" in request.url and assets.append(request.url.split("asset=")[1]))
    page = context.new_page()
    page.goto(f"{server.url}/playground")
    page.wait_for_function("window.playground.ready === true")
    assert outside == []
    assert {"style.css", "main.js", "takes.js", "waveform.js", "realtime.js", "library.js"} <= set(assets)
    context.close()


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


def test_the_page_and_its_assets_load_without_the_api_key(tmp_path, engine):
    client = make_app(tmp_path, engine, api_key="sk-test").test_client()
    page = client.get("/playground")
    assert page.status_code == 200 and b"Higgs Audio playground" in page.data
    script = client.get("/playground?asset=main.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert client.get("/playground?asset=style.css").mimetype == "text/css"
    for name in ("../playground.html", "..%2Fapp.py", ".hidden.js", "nothing.js", "main.py"):
        assert client.get(f"/playground?asset={name}").status_code == 404, name
    assert client.get("/").headers["Location"].endswith("playground")
    assert client.get("/voices").status_code == 401  # the API behind it still wants the key
