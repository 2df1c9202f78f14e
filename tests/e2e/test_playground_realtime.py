"""The playground's realtime mode in Chromium against the real server's WS /v1/audio/speech/stream: audio plays
while the user is still typing, in one voice for the session, Stop sends input.cancel and silences what was
scheduled, and a finished utterance becomes a take."""

from __future__ import annotations

import json

import pytest

from pages import INK, assert_drawn, playground_page, playground_server, take, wait_for_take

server = pytest.fixture(playground_server)
page = pytest.fixture(playground_page)

PLAYING = "window.playground.realtime.player !== null && window.playground.realtime.player.playing"


@pytest.fixture
def frames(page):
    """The session's JSON messages as they go out and come in (binary frames counted per utterance)."""
    log = {"sent": [], "received": [], "binary": 0}

    def watch(ws):
        ws.on("framesent", lambda payload: log["sent"].append(json.loads(payload)))
        ws.on("framereceived", lambda payload: log["received"].append(json.loads(payload))
              if isinstance(payload, str) else log.update(binary=log["binary"] + 1))

    page.on("websocket", watch)
    return log


def sentences(page) -> list[tuple[str, str]]:
    """The sentences the page lists, with their state (speaking, spoken, stopped)."""
    items = page.eval_on_selector_all("#rt_sentences li", "items => items.map(i => [i.querySelector('q').textContent, i.className])")
    return [tuple(item) for item in items]


def test_sentences_play_while_the_user_is_still_typing(page, frames):
    page.fill("#max_new_tokens", "40")
    page.click("#rt_text")
    page.keyboard.type("Hello there. ")
    # The first sentence is heard before the rest is typed.
    page.wait_for_function(PLAYING, timeout=60_000)
    assert page.input_value("#rt_text") == "Hello there. "
    assert sentences(page)[0][0] == "Hello there."
    assert page.evaluate("window.playground.realtime.player.context.state") == "running"
    page.keyboard.type("How are you today? I am fine")
    page.click("#rt_done")
    page.wait_for_function("document.getElementById('rt_status').textContent.startsWith('done: 3 sentences')",
                           timeout=60_000)
    assert sentences(page) == [("Hello there.", "spoken"), ("How are you today?", "spoken"), ("I am fine", "spoken")]
    drawn = page.locator("#rt_wave").evaluate(INK)
    assert drawn["inked"] > 0

    # What went over the wire: one session.config (one voice for the session), the text as typed, input.done.
    kinds = [m["type"] for m in frames["sent"]]
    assert kinds[0] == "session.config" and kinds.count("session.config") == 1 and kinds[-1] == "input.done"
    assert frames["sent"][0]["max_new_tokens"] == 40 and frames["sent"][0]["voice"] is None
    assert "".join(m["text"] for m in frames["sent"] if m["type"] == "input.text") == "Hello there. How are you today? I am fine"
    assert frames["binary"] > 0

    # The utterance is a take, with its text, its voice and its first-audio time.
    card = wait_for_take(page, 1)
    meta = card.locator(".take-meta").text_content()
    assert card.locator(".take-title").text_content() == "#1 Realtime" and "smart voice" in meta
    assert "first audio " in meta
    assert card.locator(".take-text").text_content() == "Hello there. How are you today? I am fine"
    assert card.locator(".rerun").is_disabled()
    assert_drawn(card)


def test_the_session_keeps_the_voice_picked(page, frames):
    page.fill("#max_new_tokens", "40")
    page.select_option("#voice", "en_woman")
    page.fill("#seed", "7")
    page.click("#rt_text")
    page.keyboard.type("One voice. ")
    page.click("#rt_done")
    card = wait_for_take(page, 1)
    assert frames["sent"][0]["voice"] == "en_woman" and frames["sent"][0]["seed"] == 7
    assert "voice en_woman" in card.locator(".take-meta").text_content() and "seed 7" in card.locator(".take-meta").text_content()


def test_a_realtime_take_shows_the_seed_the_server_chose(page, frames):
    page.fill("#max_new_tokens", "40")
    page.fill("#temperature", "0.7")  # sampled, and no seed typed
    page.click("#rt_text")
    page.keyboard.type("Which seed? ")
    page.click("#rt_done")
    card = wait_for_take(page, 1)
    chosen = next(m["seed"] for m in frames["received"] if m["type"] == "audio.start")
    assert "seed" not in frames["sent"][0] and isinstance(chosen, int)
    assert f"seed {chosen}" in card.locator(".take-meta").text_content()


def test_stop_sends_input_cancel_and_silences_the_audio(page, frames):
    page.fill("#max_new_tokens", "200")  # 7.7 s of audio a sentence: plenty still scheduled when Stop comes
    page.click("#rt_text")
    page.keyboard.type("One two three. Four five six. Seven eight nine. Ten eleven twelve. ")
    page.wait_for_function(PLAYING, timeout=60_000)
    page.evaluate("window.stopped = window.playground.realtime.player")
    page.click("#rt_stop")
    page.wait_for_function("window.stopped.playing === false")  # nothing more of it sounds
    assert page.text_content("#rt_status").startswith("stopped")
    assert "stopped" in [state for _, state in sentences(page)]

    # The next utterance is spoken; nothing of the stopped one came after the server's `cancelled`.
    page.click("#rt_text")
    page.keyboard.type("After the stop. ")
    page.click("#rt_done")
    page.wait_for_function("document.getElementById('rt_status').textContent.startsWith('done: 1 sentence')",
                           timeout=60_000)
    assert {"type": "input.cancel"} in frames["sent"]
    received = frames["received"]
    cancelled = next(i for i, m in enumerate(received) if m["type"] == "cancelled")
    assert received[cancelled]["utterance_index"] == 0
    assert all(m.get("utterance_index", 1) >= 1 for m in received[cancelled + 1:])
    assert [text for text, _ in sentences(page)] == ["After the stop."]
    card = wait_for_take(page, 1)  # only the finished utterance is a take
    assert card.locator(".take-text").text_content() == "After the stop. "
    assert page.locator("#take_list > li").count() == 1
    assert take(page, 1).is_visible()


def test_end_session_closes_the_socket_and_typing_opens_a_new_one(page, frames):
    page.fill("#max_new_tokens", "40")
    page.click("#rt_text")
    page.keyboard.type("First session. ")
    page.wait_for_function(PLAYING, timeout=60_000)
    page.click("#rt_close")
    page.wait_for_function("document.getElementById('rt_status').textContent.startsWith('session ended')",
                           timeout=60_000)
    assert page.locator("#rt_stop").is_disabled() and page.locator("#rt_close").is_disabled()
    page.click("#rt_text")
    page.keyboard.type("Second session. ")
    page.click("#rt_done")
    page.wait_for_function("document.getElementById('rt_status').textContent.startsWith('done')", timeout=60_000)
    assert [m["type"] for m in frames["sent"]].count("session.config") == 2
