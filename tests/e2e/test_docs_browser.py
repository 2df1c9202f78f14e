"""/docs and the playground's model note in Chromium, with the network closed to everything but the server and an
API key configured: the page loads, takes the key, and sends it."""

from __future__ import annotations

import pytest

from pages import KEY, confine


@pytest.fixture
def server(keyed_playground):
    return keyed_playground


@pytest.fixture
def page(browser, server):
    """A page that may reach only the server: anything else (a CDN) is refused and recorded."""
    context = browser.new_context()
    outside = confine(context, server.url)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert outside == [] and errors == []


def test_docs_load_offline_take_the_key_and_send_it(page, server):
    page.goto(f"{server.url}/docs")
    page.wait_for_function("document.getElementById('key-status').textContent.includes('needs its API key')")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.wait_for_selector(".swagger-ui .info .title:has-text('Higgs Audio Server')")
    operation = page.locator(".opblock", has=page.locator('.opblock-summary-path[data-path="/info"]'))
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    with page.expect_response(lambda r: r.url == f"{server.url}/info") as answer:
        operation.locator(".execute").click()
    assert answer.value.status == 200 and answer.value.request.headers.get("x-api-key") == KEY
    operation.locator(".live-responses-table .response-col_status:has-text('200')").wait_for()


def test_the_playground_says_which_model_answers_and_that_it_is_a_demo(page, server):
    page.goto(f"{server.url}/playground")
    page.fill("#api_key", KEY)
    page.dispatch_event("#api_key", "change")
    page.wait_for_function("window.playground.ready === true")
    note = page.text_content("#model_note")
    assert note.startswith("Model: ") and "/model on cpu" in note and "random weights" in note
