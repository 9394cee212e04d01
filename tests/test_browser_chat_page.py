"""The chat page (`GET /`) in a real browser: glmlab's server on loopback with the tiny model and an API
key, headless Chromium driven by Playwright.

It types the key, uploads, drops and pastes pictures, picks an adapter, asks, and checks that the
streamed answer is exactly what the API gives for the same greedy request, that thinking folds away,
that Stop keeps what came and that a wrong key shows the server's 401 message. Needs Debian's
chromium and the playwright Python package (no Playwright browser download):
`scripts/install-test-deps.sh`. The screenshot lands in outputs/browser/chat_page.png.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image
from support import API_KEY, CHROMIUM, CHROMIUM_ARGS, image_message, scene, script

from glmlab.answer import strip_box_tags
from glmlab.client import downscale
from glmlab.serve import ServerSettings, start

SCREENSHOT = Path(__file__).parent.parent / "outputs" / "browser" / "chat_page.png"
TIMING = re.compile(
    r"first token \d+\.\d\d s · total \d+\.\d\d s · \d+\.\d tokens/s · tokens in \d+ \(\d+ image\) / out \d+"
)
UNAUTHORISED = (
    "401: missing or wrong API key: send 'Authorization: Bearer <key>' (the key the server was started "
    "with, --api-key or GLMLAB_API_KEY)."
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="no chromium: run scripts/install-test-deps.sh (apt-get install chromium)",
    ),
]


def serve(vlm, **settings):
    return start(vlm, ServerSettings(model="tiny", api_key=API_KEY, port=0, timeout_s=120, **settings))


@pytest.fixture(scope="module")
def server(served_vlm, adapters):
    """The tiny model with adapter alpha, behind an API key."""
    running = serve(served_vlm, adapters={"alpha": str(adapters["alpha"])})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def thinking_server(scripted):
    """The scripted tiny model: it thinks "o", then answers "red"."""
    script(scripted, "<think>o</think>red")
    running = serve(scripted)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: run scripts/install-test-deps.sh")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser):
    """Opens the chat page of a server; keeps a screenshot of what it showed when the test fails."""
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    page = context.new_page()
    page.set_default_timeout(60_000)
    problems: list[str] = []  # the page's script errors and CSP refusals
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))

    def open_(server) -> object:
        page.goto(server.url.removesuffix("/v1") + "/")
        return page

    yield open_
    context.close()
    assert [p for p in problems if "401" not in p] == []  # the 401s are the wrong-key tests' own


def api_answer(server, messages, **fields) -> dict:
    """The non-streamed API answer to a request."""
    body = {"messages": messages, "temperature": 0, **fields}
    response = httpx.post(
        f"{server.url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]


def enter_key(page, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Tab")  # the change event: stored, and the model list loaded with it


def ask(page, question: str) -> dict:
    """Asks; returns the JSON body the page sent."""
    page.fill("#question", question)
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#ask")
    assert sent.value.headers["authorization"] == f"Bearer {page.input_value('#api-key')}"
    return json.loads(sent.value.post_data)


def wait_for_status(page, prefix: str) -> str:
    page.wait_for_function("p => document.querySelector('#status').textContent.startsWith(p)", arg=prefix)
    return page.text_content("#status")


def last_turn(page, part: str) -> str:
    return page.locator(f".turn >> nth=-1 >> .{part}").text_content()


def test_the_page_answers_like_the_api_for_the_same_greedy_request(open_page, server, tmp_path):
    page = open_page(server)
    try:
        drive_a_conversation(page, server, tmp_path)
    except BaseException:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT.with_name("chat_page_failure.png")))
        raise


def drive_a_conversation(page, server, tmp_path: Path) -> None:
    page.wait_for_selector("#error:not([hidden])")  # the model list needs the key
    assert page.text_content("#error") == UNAUTHORISED
    enter_key(page, API_KEY)
    page.wait_for_selector("#error", state="hidden")
    assert page.locator("#model option").evaluate_all("options => options.map(o => o.value)") == [
        "tiny",
        "alpha",
    ]
    assert page.evaluate("() => sessionStorage.getItem('glmlab.apiKey')") == API_KEY
    assert API_KEY not in page.url

    picture = tmp_path / "red-circle.png"
    scene(160, 120).save(picture)
    page.set_input_files("#image-file", str(picture))
    page.wait_for_function("() => document.querySelector('#image-info').textContent.includes('160')")
    assert page.text_content("#image-info") == "red-circle.png · 160×120"
    page.select_option("#model", "alpha")
    page.fill("#max-tokens", "24")

    question = "What is in this picture? 这张图里有什么？"
    sent = ask(page, question)
    assert {key: sent[key] for key in ("model", "stream", "stream_options", "max_tokens", "temperature")} == {
        "model": "alpha",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 24,
        "temperature": 0,
    }
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}
    image_url = sent["messages"][0]["content"][0]["image_url"]["url"]
    assert image_url == "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    wait_for_status(page, "Done")
    messages = image_message(scene(160, 120), question)
    expected = api_answer(server, messages, model="alpha", max_tokens=24)
    first = last_turn(page, "answer")
    assert first.strip() and first == strip_box_tags(expected["content"])
    assert TIMING.fullmatch(last_turn(page, "timing"))
    assert page.input_value("#question") == "" and page.is_hidden("#preview")  # both went with the turn

    # a follow-up sends the whole conversation, the answer as the assistant's turn
    sent = ask(page, "And its colour?")
    assert [message["role"] for message in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == expected["content"]
    wait_for_status(page, "Done")
    followed = messages + [
        {"role": "assistant", "content": expected["content"]},
        {"role": "user", "content": "And its colour?"},
    ]
    assert last_turn(page, "answer") == strip_box_tags(
        api_answer(server, followed, model="alpha", max_tokens=24)["content"]
    )
    assert page.locator(".turn").count() == 2

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_thinking_streams_into_a_collapsible_block(open_page, thinking_server, scripted):
    page = open_page(thinking_server)
    enter_key(page, API_KEY)
    page.fill("#max-tokens", "20")
    ask(page, "What colour is the circle?")
    wait_for_status(page, "Done")
    expected = api_answer(
        thinking_server,
        [{"role": "user", "content": "What colour is the circle?"}],
        max_tokens=20,
        chat_template_kwargs={"enable_thinking": True},
    )
    assert (expected["reasoning_content"], expected["content"]) == ("o", "red")
    block = page.locator(".turn .thinking")
    assert block.is_visible() and block.locator("summary").text_content() == "Thinking"
    assert last_turn(page, "thinking-text") == "o" and last_turn(page, "answer") == "red"
    assert not block.evaluate("details => details.open")  # folded away once the answer came
    block.locator("summary").click()
    assert block.evaluate("details => details.open") and block.locator(".thinking-text").is_visible()
    block.locator("summary").click()
    assert not block.locator(".thinking-text").is_visible()

    script(scripted, "<img src=x>")  # thinking off: the model answers at once, and the page shows no block
    page.uncheck("#thinking")
    assert ask(page, "Again?")["chat_template_kwargs"] == {"enable_thinking": False}
    wait_for_status(page, "Done")
    assert page.locator(".turn >> nth=-1 >> .thinking").is_hidden()
    assert last_turn(page, "answer") == "<img src=x>"  # markup from the model is shown as text
    assert page.locator(".answer img").count() == 0


def test_stop_keeps_the_partial_answer_and_frees_the_model(open_page, server):
    page = open_page(server)
    enter_key(page, API_KEY)
    page.fill("#max-tokens", "3000")
    ask(page, "Tell me everything.")
    page.wait_for_function(
        """() => document.querySelector('#status').textContent === 'Generating…'
                 && document.querySelector('.turn .answer').textContent.length > 0"""
    )
    page.click("#stop")
    status = wait_for_status(page, "Stopped")
    kept = len(last_turn(page, "answer"))
    assert status == f"Stopped: kept {kept} characters." and kept > 0
    assert re.fullmatch(
        r"first token \d+\.\d\d s · total \d+\.\d\d s · stopped before the usage came",
        last_turn(page, "timing"),
    )
    assert page.is_disabled("#stop") and page.is_enabled("#ask")
    page.fill("#max-tokens", "4")
    ask(page, "Short, please.")  # the server is free again
    assert wait_for_status(page, "Done")
    assert TIMING.fullmatch(last_turn(page, "timing"))


def test_a_wrong_key_shows_the_servers_401_message_and_keeps_the_question(open_page, server):
    page = open_page(server)
    enter_key(page, API_KEY)
    page.wait_for_selector("#error", state="hidden")
    enter_key(page, "not-the-key")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == UNAUTHORISED
    ask(page, "Anyone there?")
    assert wait_for_status(page, "Failed") == "Failed."
    assert page.text_content("#error") == UNAUTHORISED
    assert page.locator(".turn").count() == 0 and page.input_value("#question") == "Anyone there?"


def put_file(page, event: str, image: Image.Image, name: str) -> None:
    """Dispatches a drop or paste event carrying `image` as a PNG file, as the browser does."""
    data = io.BytesIO()
    image.save(data, format="PNG")
    page.evaluate(
        """([event, name, data]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'image/png'}));
            const init = {bubbles: true, cancelable: true};
            document.querySelector('#question').dispatchEvent(event === 'drop'
                ? new DragEvent('drop', {...init, dataTransfer: transfer})
                : new ClipboardEvent('paste', {...init, clipboardData: transfer}));
        }""",
        [event, name, base64.b64encode(data.getvalue()).decode()],
    )


def test_drop_and_paste_attach_and_a_big_picture_is_downscaled_as_the_client_does(open_page, server):
    page = open_page(server)
    enter_key(page, API_KEY)
    put_file(page, "paste", scene(200, 100), "pasted.png")
    page.wait_for_function("() => document.querySelector('#image-info').textContent.startsWith('pasted')")
    assert page.text_content("#image-info") == "pasted.png · 200×100"

    big = scene(3000, 2000, "blue")
    put_file(page, "drop", big, "big.png")
    page.wait_for_function("() => document.querySelector('#image-info').textContent.startsWith('big')")
    limit = int(page.get_attribute("body", "data-max-image-pixels"))
    width, height = downscale(big, limit).size
    assert (width, height) == (2508, 1672)
    assert page.text_content("#image-info") == f"big.png · 3000×2000 → sent as {width}×{height}"

    page.fill("#max-tokens", "2")
    sent = ask(page, "What colour?")
    url = sent["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    received = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert received.size == (width, height)
    assert received.convert("RGB").getpixel((width // 2, height // 2)) == (0, 0, 255)  # the circle
    wait_for_status(page, "Done")
