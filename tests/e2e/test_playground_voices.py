"""The playground's voices in Chromium against the real server: keep a smart voice from its take (then it is a
library voice that clones), the library's play, add and delete, and the dialogue helper's tags and voices."""

from __future__ import annotations

import io

import pytest
import requests
import soundfile as sf

from helpers import EXAMPLES, write_voice
from pages import SAMPLES, assert_drawn, playground_page, playground_server, wait_for_take

server = pytest.fixture(playground_server)
page = pytest.fixture(playground_page)


def library_names(page) -> list[str]:
    return page.eval_on_selector_all("#voice_list li[data-voice]", "items => items.map(i => i.dataset.voice)")


def test_keep_this_voice_makes_a_smart_voice_take_a_library_voice_that_clones(page, server):
    page.fill("#temperature", "0.8")
    assert page.input_value("#voice") == ""  # the smart voice: another voice on every request
    assert "keep one you like" in page.text_content("#voice_note")
    page.click("#generate")
    liked = wait_for_take(page, 1)
    liked.locator(".keep").click()
    assert liked.locator(".keep-transcript").input_value() == page.input_value("#text")
    assert liked.locator(".keep-name").evaluate("e => e === document.activeElement")
    liked.locator(".keep-name").fill("liked_voice")
    liked.locator(".keep-form button[type=submit]").click()
    page.wait_for_selector("#voice_list li[data-voice=liked_voice]")
    assert liked.locator(".take-note").text_content().startswith('Kept as the library voice "liked_voice"')
    assert page.locator("#voice_list li[data-voice=liked_voice] .badge").count() == 0  # a recording, not synthetic
    assert page.input_value("#voice") == "liked_voice"  # selected for the next take

    # The library holds the take itself: its audio sample for sample, its text as the transcript.
    stored, rate = sf.read(io.BytesIO(requests.get(f"{server.url}/voices/liked_voice/audio", timeout=10).content),
                           dtype="int16")
    assert rate == 24000 and stored.tolist() == page.evaluate(SAMPLES, 1)
    assert (server.voices / "liked_voice.txt").read_text().strip() == page.input_value("#text")

    # Cloning it: the next take asks for that voice, and so does every one after it.
    with page.expect_request("**/generate") as sent:
        page.click("#generate")
    assert sent.value.post_data_json["ref_audio"] == "liked_voice"
    clone = wait_for_take(page, 2)
    assert "voice liked_voice" in clone.locator(".take-meta").text_content()
    assert_drawn(clone)

    # The name is taken now: the server's 409, and the way past it.
    liked.locator(".keep").click()
    liked.locator(".keep-name").fill("liked_voice")
    liked.locator(".keep-form button[type=submit]").click()
    page.wait_for_function("document.querySelector('#take_list > li[data-take=\"1\"] .take-note').classList.contains('error')")
    assert "409" in liked.locator(".take-note").text_content() and "replace" in liked.locator(".take-note").text_content()
    liked.locator(".keep-overwrite").check()
    liked.locator(".keep-form button[type=submit]").click()
    page.wait_for_function("document.querySelector('#take_list > li[data-take=\"1\"] .take-note').textContent.startsWith('Kept')")


def test_a_library_voice_plays_from_its_play_button(page):
    expected = sf.info(str(EXAMPLES / "voice_prompts" / "belinda.wav")).duration
    page.click("#voice_list li[data-voice=belinda] button:has-text('Play')")
    page.wait_for_function("!window.playground.player.element.paused && window.playground.player.element.duration > 0")
    assert abs(page.evaluate("window.playground.player.element.duration") - expected) < 0.05
    page.wait_for_function("document.getElementById('library_status').textContent === 'Playing the voice belinda.'")


def test_add_a_voice_use_it_and_delete_it(page, server, tmp_path):
    clip = write_voice(tmp_path, "upload", seconds=2.0)
    page.fill("#up_name", "fresh_voice")
    page.set_input_files("#up_file", str(clip))
    page.fill("#up_transcript", "Reference words.")
    page.click("#upload_form button[type=submit]")
    page.wait_for_selector("#voice_list li[data-voice=fresh_voice]")
    assert page.text_content("#library_status") == "Added the voice fresh_voice."
    assert (server.voices / "fresh_voice.wav").exists()
    assert "fresh_voice" in page.eval_on_selector_all("#voice option", "o => o.map(x => x.value)")
    page.click("#voice_list li[data-voice=fresh_voice] button:has-text('Use')")
    assert page.input_value("#voice") == "fresh_voice"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#voice_list li[data-voice=fresh_voice] button:has-text('Delete')")
    page.wait_for_selector("#voice_list li[data-voice=fresh_voice]", state="detached")
    assert not (server.voices / "fresh_voice.wav").exists()
    assert "fresh_voice" not in page.eval_on_selector_all("#voice option", "o => o.map(x => x.value)")
    assert page.input_value("#voice") == ""  # the deleted voice is no longer picked


def test_a_bad_upload_shows_the_servers_message(page, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"this is not audio")
    page.fill("#up_name", "broken")
    page.set_input_files("#up_file", str(not_audio))
    page.fill("#up_transcript", "Words.")
    page.click("#upload_form button[type=submit]")
    page.wait_for_function("document.getElementById('library_status').classList.contains('error')")
    assert page.text_content("#library_status").startswith("Cannot add broken: 400")
    assert "broken" not in library_names(page)


def test_the_dialogue_helper_inserts_speaker_tags_and_sends_a_voice_per_speaker(page):
    page.click("#dialogue summary")
    page.fill("#text", "")
    page.click("#speakers li:nth-child(1) button")
    page.keyboard.type("Did you hear the storm last night?")
    page.click("#speakers li:nth-child(2) button")
    page.keyboard.type("I slept through all of it.")
    text = page.input_value("#text")
    assert text == "[SPEAKER0] Did you hear the storm last night?\n[SPEAKER1] I slept through all of it."
    assert "each speaker gets the voice picked in the dialogue helper" in page.text_content("#voice_note")

    # One voice picked, the other left on the smart voice: the server matches voices by position, so say so.
    page.select_option("#speaker0_voice", "belinda")
    page.click("#generate")
    assert "pick a voice for every speaker" in page.text_content("#status")
    assert page.locator("#take_list > li").count() == 0

    page.select_option("#speaker1_voice", "en_man")
    with page.expect_request("**/generate") as sent:
        page.click("#generate")
    assert sent.value.post_data_json["ref_audio"] == "belinda,en_man"
    assert sent.value.post_data_json["text"] == text
    card = wait_for_take(page, 1)
    assert "voices belinda, en_man" in card.locator(".take-meta").text_content()
    assert card.locator(".keep").is_disabled()  # a dialogue holds two voices: nothing to keep as one

    page.click("#add_speaker")
    assert page.locator("#speaker2_voice").evaluate("e => e === document.activeElement")
    assert "belinda" in page.eval_on_selector_all("#speaker2_voice option", "o => o.map(x => x.value)")


def test_a_dialogue_on_smart_voices_sends_no_voice(page):
    page.fill("#text", "[SPEAKER0] Hello.\n[SPEAKER1] Hi there.")
    page.select_option("#voice", "belinda")  # a one-speaker pick does not apply to a dialogue
    with page.expect_request("**/generate") as sent:
        page.click("#generate")
    assert "ref_audio" not in sent.value.post_data_json
    card = wait_for_take(page, 1)
    assert "smart voices per speaker" in card.locator(".take-meta").text_content()
    assert_drawn(card)
