"""The classroom widget in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright.

It runs `notebooks/07_classroom.ipynb` (a copy in a scratch folder), clears the notebook's pictures and
answers, uploads two pictures through the widget's file input, answers a preset for both, then a
question per picture, exports the web page and checks what the page shows. Needs Debian's chromium and
the playwright Python package: `scripts/install-test-deps.sh`. The screenshot lands in outputs/browser/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import CHROMIUM, lab_page, run_all_cells, scene

REPO = Path(__file__).parent.parent
NOTEBOOK = REPO / "notebooks" / "07_classroom.ipynb"
SCREENSHOT = REPO / "outputs" / "browser" / "classroom_widget.png"
DESCRIBE = "Describe this picture for a class of students"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="no chromium: run scripts/install-test-deps.sh (apt-get install chromium)",
    ),
]


def test_classroom_widget_in_jupyterlab_uploads_answers_and_exports(tmp_path, glmlab_home):
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with lab_page(NOTEBOOK, tmp_path, glmlab_home) as page:
        try:
            drive_the_widget(page, tmp_path)
        except BaseException:
            page.screenshot(path=str(SCREENSHOT.with_name("classroom_failure.png")))  # what the page showed
            raise


def wait_for_status(page, prefix: str) -> None:
    page.wait_for_function(
        """prefix => document.querySelector('.glmlab-classroom .glmlab-status').textContent.startsWith(prefix)""",
        arg=prefix,
        timeout=90_000,
    )


def table_rows(widget) -> list[list[str]]:
    return [row.locator("td").all_inner_texts() for row in widget.locator(".glmlab-table tr").all()[1:]]


def drive_the_widget(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect  # imported here: without playwright, lab_page says what to install

    code_cells = sum(cell["cell_type"] == "code" for cell in json.loads(NOTEBOOK.read_text())["cells"])
    run_all_cells(page, code_cells)
    assert "Traceback (most recent call last)" not in page.locator(".jp-Notebook").inner_text()
    widget = page.locator(".glmlab-classroom").first
    widget.scroll_into_view_if_needed()
    assert len(table_rows(widget)) == 12  # the notebook's own two runs over its six pictures

    widget.get_by_role("button", name="Clear pictures 清空").click()
    widget.get_by_role("button", name="Clear answers 清空回答").click()
    widget.get_by_text("No pictures yet").wait_for()
    for name, colour in (("red.png", "red"), ("blue.png", "blue")):
        scene(160, 120, colour=colour).save(tmp_path / name)
    # ipywidgets 8.1's FileUpload keeps its <input type=file> out of the page: answer the file chooser it opens
    with page.expect_file_chooser() as chooser:
        widget.locator(".glmlab-upload").click()
    chooser.value.set_files([str(tmp_path / "red.png"), str(tmp_path / "blue.png")])
    widget.get_by_text("2 pictures · 2 张图片").wait_for()
    assert widget.locator(".glmlab-gallery img").count() == 2

    widget.locator("select").select_option(label="Describe the picture")
    expect(widget.locator(".glmlab-question textarea")).to_have_value(re.compile(f"^{DESCRIBE}"))
    widget.locator("button.glmlab-answer").click()
    expect(widget.locator(".glmlab-table tr")).to_have_count(1 + 2, timeout=90_000)  # header + a row each
    wait_for_status(page, "Done: 2 answers.")
    rows = table_rows(widget)
    assert [row[0] for row in rows] == ["red.png", "blue.png"]
    assert all(row[1].startswith(DESCRIBE) and row[2].strip() and row[4] == "" for row in rows)
    assert widget.locator(".glmlab-progress").inner_text().strip().startswith("2 / 2")

    widget.get_by_role("button", name="A question per picture 每图一问").click()
    own = widget.locator(".glmlab-gallery input[type=text]")
    own.nth(1).wait_for()  # the boxes appear under the pictures
    own.nth(1).fill("What colour is it? 什么颜色？")
    own.nth(1).press("Tab")  # the value syncs to the kernel on blur
    widget.locator("button.glmlab-answer").click()
    expect(widget.locator(".glmlab-table tr")).to_have_count(1 + 4, timeout=90_000)
    wait_for_status(page, "Done: 2 answers.")
    rows = table_rows(widget)
    assert len(rows) == 4 and rows[3][:2] == ["blue.png", "What colour is it? 什么颜色？"]
    assert rows[2][1].startswith(DESCRIBE)  # a blank box gets the main question

    widget.get_by_role("button", name="Export web page 导出网页").click()
    wait_for_status(page, "Answers saved to ")
    (exported,) = (tmp_path / "notebooks").glob("glmlab-classroom-*.html")
    page_text = exported.read_text(encoding="utf-8")
    assert page_text.count('<img src="data:image/png;base64,') == 4
    assert re.search(r"<td>blue\.png</td><td>What colour is it\? 什么颜色？</td>", page_text)
    widget.screenshot(path=str(SCREENSHOT))
