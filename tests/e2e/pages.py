"""What the browser tests share: Chromium as they launch it, the playground server, fresh pages, a page confined to
one origin, and reading what a take's card shows (its canvas ink, its samples)."""

from __future__ import annotations

import shutil

from playwright.sync_api import sync_playwright

from harness import start_server
from helpers import EXAMPLES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, no sandbox (root in CI), and none of Chromium's own network chatter on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--autoplay-policy=no-user-gesture-required"]

# What a waveform canvas shows: inked pixels and the columns that hold any.
INK = """canvas => {
  const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const columns = new Set();
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) {
    if (data[i] > 0) { inked++; columns.add(((i - 3) / 4) % canvas.width); }
  }
  return {inked, columns: columns.size, width: canvas.width, height: canvas.height};
}"""
# A take's samples as the page holds them (for comparing two takes' audio).
SAMPLES = """n => {
  const card = [...window.playground.takes.cards.values()].find(c => c.take.n === n);
  return Array.from(card.samples);
}"""


KEY = "playground-key"  # the API key of the session's keyed playground server (tests/e2e/conftest.py)


def start_playground_server(tiny_checkpoint, directory, *extra, env=None):
    """The real server with its own copy of the shipped voices (`.voices`): the tests add and delete voices."""
    voices = directory / "voices"
    shutil.copytree(EXAMPLES / "voice_prompts", voices)
    srv = start_server(tiny_checkpoint, directory, "--max-new-tokens", "600", "--voice-prompts-dir", str(voices),
                       *extra, env=env)
    srv.voices = voices
    return srv


def launch_chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# The fixtures of every playground test file (each wraps these: `server = pytest.fixture(playground_server)`): the
# session's playground server and Chromium (tests/e2e/conftest.py: each start costs seconds), a fresh browser
# profile per test.
def playground_server(playground):
    return playground


def playground_page(browser, server):
    page = open_playground(browser, server.url)
    yield page
    page.context.close()
    assert page.errors == []


def open_playground(browser, url, **context_options):
    """A fresh browser profile (empty storage) on the playground, voices and scenes loaded; short greedy takes."""
    context = browser.new_context(accept_downloads=True, **context_options)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(f"{url}/playground")
    page.wait_for_function("window.playground.ready === true")
    page.fill("#max_new_tokens", "80")
    page.fill("#temperature", "0")
    return page


def take(page, n):
    """Take number n's card."""
    return page.locator(f'#take_list > li[data-take="{n}"]')


def wait_for_take(page, n, timeout=120_000):
    """Take n is finished (its card no longer running) and the page is idle again."""
    page.wait_for_selector(f'#take_list > li[data-take="{n}"]:not(.running)', timeout=timeout)
    page.wait_for_function("window.playground.busy === false")
    return take(page, n)


def ink(card):
    return card.locator("canvas.wave").evaluate(INK)


def assert_drawn(card):
    drawn = ink(card)
    assert drawn["columns"] >= 0.95 * drawn["width"], drawn  # the whole take, left to right
    assert drawn["inked"] >= 0.05 * drawn["width"] * drawn["height"], drawn  # more than a flat line


def confine(context, origin: str) -> list[str]:
    """Let the context's pages reach `origin` only; every other request (a CDN, a font) is refused and recorded in
    the list returned."""
    outside: list[str] = []

    def route(request_route):
        if request_route.request.url.startswith(origin):
            request_route.continue_()
        else:
            outside.append(request_route.request.url)
            request_route.abort()

    context.route("**/*", route)
    return outside


def drawn_take_showing(page, n, part: str, text: str):
    """Take n once finished: its `part` (a selector inside the card) shows `text`, and its waveform is drawn."""
    card = wait_for_take(page, n)
    assert text in card.locator(part).text_content()
    assert_drawn(card)
    return card
