"""The chat page in a real browser: Debian's headless chromium driven through Playwright.

The server runs in a subprocess on a free loopback port. No browser is ever downloaded: the
test uses /usr/bin/chromium, and when it or the playwright package is missing, the test is
skipped with a plain reason that `pytest -ra` (hence `make test`) prints.
"""

import os
from pathlib import Path

import pytest

from tests.chat.serve_support import (
    fake_server_command,
    free_port,
    serve_command,
    start_server,
    stop_server,
    tiny_run,
)

CHROMIUM = Path(os.environ.get("TORCHTUTOR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:
    pytest.skip("browser test did not run: the Python package 'playwright' is not installed "
                "(pip install -e '.[dev]')", allow_module_level=True)
if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"browser test did not run: {CHROMIUM} not found (install Debian's chromium: "
                "apt-get install chromium; .ci/run does this)", allow_module_level=True)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def stand_in_url():
    port = free_port()
    # 0.4 s per decode: long enough to see the waiting state.
    process = start_server(fake_server_command(port, delay=0.4), port)
    yield f"http://127.0.0.1:{port}/"
    assert stop_server(process) == 0


def _open(browser, url: str, width: int = 375, height: int = 667) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(15_000)
    page.goto(url)
    return page


def test_type_press_enter_and_see_the_reply(browser, stand_in_url):
    page = _open(browser, stand_in_url)
    # The message box has focus on load: typing needs no mouse.
    assert page.evaluate("document.activeElement.id") == "message"
    page.keyboard.type("hello there")
    page.keyboard.press("Enter")
    # While the model works: a waiting bubble, the send button disabled, a status line.
    waiting = page.locator(".msg.bot.waiting")
    waiting.wait_for()
    assert page.locator("#send").is_disabled()
    assert "Waiting" in page.locator("#status").inner_text()
    reply = page.locator(".msg.bot:not(.waiting) .text").first
    reply.wait_for()
    assert reply.inner_text() == "echo: there hello"
    assert page.locator(".msg.user .text").first.inner_text() == "hello there"
    assert page.locator("#send").is_enabled()
    assert page.evaluate("document.activeElement.id") == "message"   # ready for the next one
    # The conversation is announced to screen readers.
    assert page.get_attribute("#log", "role") == "log"
    assert page.get_attribute("#log", "aria-live") == "polite"
    page.close()


def test_a_trained_model_answers_in_the_page(browser):
    """The real path: `torchtutor chat serve` on a (tiny) trained run."""
    port = free_port()
    process = start_server(serve_command(tiny_run(), port, "--decoder", "beam"), port)
    try:
        page = _open(browser, f"http://127.0.0.1:{port}/")
        page.keyboard.type("Hello there, how are you?")
        page.keyboard.press("Enter")
        reply = page.locator(".msg.bot:not(.waiting) .text").first
        reply.wait_for()
        assert reply.inner_text().strip()   # a reply, or "(no reply)" if it said EOS at once
        assert page.locator("#error").is_hidden()
        # n-best: the settings ask for 3, the page lists the reply and its 2 runners-up
        page.focus(".settings summary")
        page.keyboard.press("Enter")
        page.fill("#n-best", "3")
        page.focus("#message")
        with page.expect_response("**/api/reply") as answered:
            page.keyboard.type("What is your name?")
            page.keyboard.press("Enter")
        body = answered.value.json()
        alternatives = page.locator(".msg.bot").nth(1).locator(".alternatives li")
        alternatives.nth(2).wait_for()
        shown = alternatives.all_inner_texts()
        expected = [{"text": body["reply"], "score": body["score"]}, *body["alternatives"]]
        assert len(shown) == 3 == len(expected)
        for line, alt in zip(shown, expected, strict=True):
            assert line == f"{alt['text'] or '(no reply)'} {alt['score']:.2f}"
        page.close()
    finally:
        assert stop_server(process) == 0


def test_docs_and_redoc_render_with_other_hosts_blocked(browser, stand_in_url):
    """/docs and /redoc need nothing but this server: every other host is refused."""
    own = stand_in_url.rstrip("/")
    refused, errors = [], []

    def only_this_server(route):
        if route.request.url.startswith(own):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.route("**/*", only_this_server)
    page.goto(own + "/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "torchtutor chat" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock-summary-path", has_text="/api/reply").wait_for()
    assert refused == [] and errors == []    # no CDN, no missing favicon
    page.goto(own + "/")
    page.locator(".welcome").wait_for()
    assert refused == [] and errors == []
    page.goto(own + "/redoc")
    page.get_by_text("torchtutor chat", exact=False).first.wait_for()
    page.locator("[data-section-id]").first.wait_for()   # ReDoc drew the API's sections
    # ReDoc's own "API docs by Redocly" credit links an image on its site; refused here, it
    # leaves a blank where the logo would be, and nothing else is asked of other hosts.
    assert set(refused) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, refused
    page.close()


def test_every_decoder_option_of_the_api_reaches_the_request(browser, stand_in_url):
    from torchtutor.chat.serve.schema import ReplyRequest

    page = _open(browser, stand_in_url)
    page.focus(".settings summary")
    page.keyboard.press("Enter")
    fields = page.eval_on_selector_all("[data-option]", "els => els.map(e => e.dataset.option)")
    api = set(ReplyRequest.model_fields) - {"text"}
    assert sorted(fields) == sorted(api)   # every option the API takes, each once
    values = {"decoder": "sample", "rerank": "none", "seed": 7, "no_repeat_token": True}
    for i, name in enumerate(sorted(api - set(values))):
        values[name] = 1 + i % 3     # valid for every field: small positive whole numbers
    for name, value in values.items():
        selector = f"[data-option={name}]"
        if page.get_attribute(selector, "type") == "number":
            page.fill(selector, str(value))
        else:
            page.select_option(selector, str(value).lower())
    page.focus("#message")
    with page.expect_request("**/api/reply") as sent:
        page.keyboard.type("hello")
        page.keyboard.press("Enter")
    assert sent.value.post_data_json == {"text": "hello", **values}
    page.close()


def test_the_welcome_line_offers_an_example_prompt(browser, stand_in_url):
    page = _open(browser, stand_in_url)
    example = page.locator(".welcome .example").first
    assert page.locator(".msg").count() == 0   # the welcome is not a message of the chat
    example.click()
    assert page.input_value("#message") == example.inner_text()
    assert page.evaluate("document.activeElement.id") == "message"
    page.close()


def test_keyboard_only_conversation_on_a_phone_sized_screen(browser, stand_in_url):
    page = _open(browser, stand_in_url, width=375, height=667)
    for i, text in enumerate(["how are you", "<b>bold</b> and a-very-long-word-" + "x" * 80]):
        page.keyboard.type(text)
        page.keyboard.press("Enter")
        page.locator(".msg.bot:not(.waiting)").nth(i).wait_for()
    # Markup typed by the user is shown as text, never rendered.
    assert page.locator(".msg.user b").count() == 0
    assert "<b>bold</b>" in page.locator(".msg.user .text").nth(1).inner_text()
    # Nothing is wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # Tab reaches the send button and the settings, in order.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    page.close()


def test_decoder_settings_are_sent_only_when_changed(browser, stand_in_url):
    page = _open(browser, stand_in_url)
    with page.expect_request("**/api/reply") as first:
        page.keyboard.type("hello")
        page.keyboard.press("Enter")
    assert first.value.post_data_json == {"text": "hello"}
    page.locator(".msg.bot:not(.waiting)").first.wait_for()
    page.focus(".settings summary")
    page.keyboard.press("Enter")        # opens the settings
    page.select_option("#decoder", "beam")
    page.fill("#beam-size", "3")
    page.focus("#message")
    with page.expect_request("**/api/reply") as second:
        page.keyboard.type("how are you")
        page.keyboard.press("Enter")
    assert second.value.post_data_json == {"text": "how are you", "decoder": "beam",
                                           "beam_size": 3}
    page.close()


def test_errors_are_shown_and_escape_dismisses_them(browser, stand_in_url):
    page = _open(browser, stand_in_url)
    page.keyboard.press("Enter")   # nothing typed
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "Type a message first" in error.inner_text()
    page.keyboard.press("Escape")
    error.wait_for(state="hidden")
    # A request the server refuses (422: too long) shows the server's own message.
    page.evaluate("document.getElementById('message').removeAttribute('maxlength')")
    page.fill("#message", "y" * 1200)
    page.keyboard.press("Enter")
    error.wait_for(state="visible")
    assert "at most 1000 characters" in error.inner_text()
    assert page.get_attribute("#error", "role") == "alert"
    assert page.input_value("#message") == "y" * 1200   # kept, to edit and retry
    assert page.evaluate("document.activeElement.id") == "message"
    page.close()


def test_a_server_that_has_gone_is_reported(browser):
    port = free_port()
    process = start_server(fake_server_command(port), port)
    page = _open(browser, f"http://127.0.0.1:{port}/")
    assert stop_server(process) == 0
    page.keyboard.type("anyone there")
    page.keyboard.press("Enter")
    page.locator("#error").wait_for(state="visible")
    assert "cannot reach the server" in page.locator("#error").inner_text()
    assert page.locator(".msg.bot").count() == 0   # no bubble stuck in "thinking"
    page.close()
