"""The VQA widget in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright.

It runs `notebooks/02_vqa_widget.ipynb` (a copy, so nothing is saved into the repo), uploads a picture
through the widget's file input, asks, stops a long answer, switches adapter, asks with the keyboard and
checks what the page shows. Needs Debian's chromium and the playwright Python package (no Playwright
browser download): `scripts/install-test-deps.sh`. The screenshot lands in outputs/browser/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import CHROMIUM, run_all_cells, scene
from support import lab_page as support_lab_page

REPO = Path(__file__).parent.parent
NOTEBOOK = REPO / "notebooks" / "02_vqa_widget.ipynb"
SCREENSHOT = REPO / "outputs" / "browser" / "vqa_widget.png"
TIMING = re.compile(
    r"first token \d+\.\d\d s · total \d+\.\d\d s · \d+\.\d tokens/s · tokens in \d+ \(\d+ image\) / out \d+"
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


@pytest.fixture
def lab_page(tmp_path, glmlab_home):
    """A Chromium page on JupyterLab showing a scratch copy of the widget notebook."""
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with support_lab_page(NOTEBOOK, tmp_path, glmlab_home) as page:
        yield page


def widget_text(widget, part: str) -> str:
    return widget.locator(f".glmlab-{part}").first.inner_text()


def wait_for_status(page, prefix: str, widget_index: int = 0, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(
        """([prefix, index]) => document.querySelectorAll('.glmlab-vqa')[index]
                                    .querySelector('.glmlab-status').textContent.startsWith(prefix)""",
        arg=[prefix, widget_index],
        timeout=timeout_ms,
    )


def test_widget_in_jupyterlab_uploads_streams_stops_and_switches_adapter(lab_page, tmp_path):
    try:
        drive_the_widget(lab_page, tmp_path)
    except BaseException:
        lab_page.screenshot(path=str(SCREENSHOT.with_name("failure.png")))  # what the page showed
        raise


def drive_the_widget(page, tmp_path: Path) -> None:
    code_cells = sum(cell["cell_type"] == "code" for cell in json.loads(NOTEBOOK.read_text())["cells"])
    run_all_cells(page, code_cells)
    assert "Traceback (most recent call last)" not in page.locator(".jp-Notebook").inner_text()
    widget = page.locator(".glmlab-vqa").first
    widget.scroll_into_view_if_needed()

    picture = tmp_path / "red-circle.png"
    scene(160, 120).save(picture)
    # ipywidgets 8.1's FileUpload keeps its <input type=file> out of the page: answer the file chooser it opens
    with page.expect_file_chooser() as chooser:
        widget.locator(".glmlab-upload").click()
    chooser.value.set_files(str(picture))
    widget.locator(".glmlab-preview", has_text="red-circle.png").locator("img").wait_for()
    assert "1 image(s): red-circle.png" in widget.inner_text()

    widget.locator(".glmlab-question textarea").fill("What is in this picture? 这张图里有什么？")
    widget.locator(".glmlab-max-tokens input").fill("2000")  # long enough to be stopped mid-way
    widget.locator(".glmlab-max-tokens input").press("Tab")
    widget.locator("button.glmlab-ask").click()
    # streamed: text is on the page while the answer is still being generated
    page.wait_for_function("""() => { const w = document.querySelector('.glmlab-vqa');
        return w.querySelector('.glmlab-status').textContent.startsWith('Generating')
            && w.querySelector('.glmlab-answer').textContent.trim().length > 0; }""")
    widget.locator("button.glmlab-stop").click()
    wait_for_status(page, "Stopped: kept")
    assert TIMING.fullmatch(widget_text(widget, "timing"))
    stopped_answer = widget_text(widget, "answer")
    assert stopped_answer.strip()

    widget.locator(".glmlab-adapter select").select_option("demo")
    widget.locator(".glmlab-max-tokens input").fill("24")
    widget.locator(".glmlab-max-tokens input").press("Tab")
    widget.locator(".glmlab-question textarea").press("Tab")  # keyboard path: Tab to Ask, then Enter
    page.keyboard.press("Enter")
    wait_for_status(page, "Done.")
    assert TIMING.fullmatch(widget_text(widget, "timing"))
    assert widget_text(widget, "answer").strip() not in ("", stopped_answer.strip())
    assert widget_text(widget, "error") == ""

    widget.get_by_text("History 历史").click()
    rows = widget.locator(".glmlab-history-table tbody tr")
    rows.last.wait_for()
    cells = rows.last.locator("td").all_inner_texts()
    assert (
        cells[1] == "What is in this picture? 这张图里有什么？"
        and cells[3] == "demo"
        and cells[-1] == "length"
    )
    assert rows.nth(rows.count() - 2).locator("td").all_inner_texts()[-1] == "stopped"

    widget.screenshot(path=str(SCREENSHOT))

    served = page.locator(".glmlab-vqa").nth(1)  # the notebook's second widget, on glmlab's server
    served.scroll_into_view_if_needed()
    served.locator(".glmlab-adapter select").select_option("demo")
    served.locator(".glmlab-question textarea").fill("Say hello. 你好")
    served.locator("button.glmlab-ask").click()
    wait_for_status(page, "Done.", widget_index=1)
    assert TIMING.fullmatch(widget_text(served, "timing"))
    assert widget_text(served, "error") == ""
    served.screenshot(path=str(SCREENSHOT.with_name("vqa_widget_server.png")))
