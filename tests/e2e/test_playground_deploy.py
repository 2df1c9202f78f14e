"""The playground where it is deployed, in Chromium: behind deploy/nginx.conf (Debian's nginx) with an API key
configured, on a closed network. The key is typed once and lasts the tab (reloads included); Generate, Stream,
realtime and the voice library all pass through the proxy with it. Then the page for a keyboard and at 200 % zoom."""

from __future__ import annotations

import pytest

from harness import nginx_in_front
from pages import KEY, assert_drawn, confine, take, wait_for_take


@pytest.fixture(scope="module")
def proxied(keyed_playground, tmp_path_factory):
    """The server with an API key, behind nginx with the shipped site config: the proxy's address."""
    with nginx_in_front([keyed_playground.port], tmp_path_factory.mktemp("nginx")) as url:
        yield url


@pytest.fixture
def closed(browser, proxied):
    """A page that may reach only the proxy: anything else (a CDN, a font) is refused and recorded."""
    context = browser.new_context(accept_downloads=True)
    outside = confine(context, proxied)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    context.close()
    assert outside == [] and page.errors == []


def test_the_key_is_typed_once_and_every_part_of_the_page_works_through_nginx(closed, proxied):
    page = closed
    page.goto(f"{proxied}/playground")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "401" in page.text_content("#status") and "API key" in page.text_content("#status")
    page.fill("#api_key", KEY)
    page.press("#api_key", "Enter")
    page.wait_for_function("window.playground.ready === true")
    assert "random weights" in page.text_content("#model_note")

    page.reload()  # the key stays for the tab: nothing to type again
    page.wait_for_function("window.playground.ready === true")
    assert page.input_value("#api_key") == KEY
    page.fill("#max_new_tokens", "80")
    with page.expect_request("**/generate") as sent:
        page.click("#generate")
    assert sent.value.headers["x-api-key"] == KEY
    assert_drawn(wait_for_take(page, 1))
    page.click("#stream")
    assert_drawn(wait_for_take(page, 2))
    take(page, 2).locator(".format").select_option("flac")
    with page.expect_download() as download:
        take(page, 2).locator(".download").click()
    assert download.value.path().read_bytes()[:4] == b"fLaC"

    # Realtime through the proxy's upgrade, the key as a subprotocol.
    page.fill("#max_new_tokens", "40")
    page.click("#rt_text")
    page.keyboard.type("Through the proxy. ")
    page.click("#rt_done")
    assert_drawn(wait_for_take(page, 3))

    # The library, with the key: play a voice, keep one.
    page.click("#voice_list li[data-voice=belinda] button:has-text('Play')")
    page.wait_for_function("document.getElementById('library_status').textContent === 'Playing the voice belinda.'")
    take(page, 1).locator(".keep").click()
    take(page, 1).locator(".keep-name").fill("proxied_voice")
    take(page, 1).locator(".keep-form button[type=submit]").click()
    page.wait_for_selector("#voice_list li[data-voice=proxied_voice]")


def test_another_tab_asks_for_the_key_again(browser, proxied):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{proxied}/playground")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert page.input_value("#api_key") == ""
    context.close()


def test_a_wrong_key_says_so_and_realtime_refuses_to_open(closed, proxied):
    page = closed
    page.goto(f"{proxied}/playground")
    page.fill("#api_key", "wrong")
    page.press("#api_key", "Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('401')")
    page.click("#rt_text")
    page.keyboard.type("Hello. ")
    page.wait_for_function("document.getElementById('rt_status').textContent.includes('could not open a realtime session')")


LABELLED = """() => [...document.querySelectorAll('input, select, textarea, button, canvas[role=slider]')]
  .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')
                 || (e.tagName === 'BUTTON' && e.textContent.trim())))
  .map(e => e.outerHTML.slice(0, 80))"""


def keyed_page(browser, proxied, **context_options):
    """The playground through the proxy in a tab where the key was typed before."""
    context = browser.new_context(**context_options)
    context.add_init_script(f"sessionStorage.setItem('higgs-playground-api-key', '{KEY}')")
    page = context.new_page()
    page.goto(f"{proxied}/playground")
    page.wait_for_function("window.playground.ready === true")
    return page


def test_every_control_has_a_label_and_the_keyboard_reaches_everything(browser, proxied):
    page = keyed_page(browser, proxied)
    page.keyboard.press("Tab")  # from the top: the key field first
    assert page.evaluate("document.activeElement.id") == "api_key"
    page.fill("#max_new_tokens", "40")
    page.focus("#text")
    page.keyboard.press("Control+Enter")  # Generate without the mouse
    card = wait_for_take(page, 1)
    assert page.evaluate(LABELLED) == []  # the take's controls included
    # From the Stream button, Tab walks into the take: its waveform (a slider), then its Play button.
    page.focus("#stream")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('role')") == "slider"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Play"
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#take_list > li[data-take=\"1\"]').classList.contains('playing')")
    page.keyboard.press("Enter")  # the same button pauses
    page.wait_for_function("!document.querySelector('#take_list > li[data-take=\"1\"]').classList.contains('playing')")
    # Keep this voice from the keyboard: Enter opens the form with the name field focused, Enter saves.
    card.locator(".keep").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.classList.contains('keep-name')")
    page.keyboard.type("keyboard_voice")
    page.keyboard.press("Enter")
    page.wait_for_selector("#voice_list li[data-voice=keyboard_voice]")
    page.context.close()


def test_readable_at_200_percent_zoom(browser, proxied):
    # 200 % zoom of a 1280 x 800 window: 640 x 400 CSS pixels at two device pixels each.
    page = keyed_page(browser, proxied, viewport={"width": 640, "height": 400}, device_scale_factor=2)
    page.fill("#max_new_tokens", "40")
    page.click("#generate")
    wait_for_take(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    boxes = [page.locator(s).bounding_box() for s in ("#compose", "#takes", "#realtime", "#library")]
    assert len({round(b["x"]) for b in boxes}) == 1 and all(b["width"] <= 640 for b in boxes)  # one column
    assert page.locator(".take canvas.wave").bounding_box()["width"] > 400
    page.context.close()
