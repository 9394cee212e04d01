"""ClassroomWidget driven from Python on the tiny model: gallery, presets, runs, the table and its exports."""

from __future__ import annotations

import base64
import datetime
import html
import io
import re
import socket
import time
import warnings

import pandas as pd
import pytest
from PIL import Image
from support import scene, script

import glmlab
from glmlab.errors import InputError
from glmlab.serve import start
from glmlab.widgets import ANSWER_COLUMNS, CLASSROOM_PRESETS, PER_PICTURE, SAME, ClassroomWidget

GREEDY = {"max_new_tokens": 8, "temperature": 0.0, "thinking": False}
DESCRIBE = dict(CLASSROOM_PRESETS)["Describe the picture"]
COLOURS = ("red", "blue", "green")


def make_widget(model, **settings) -> ClassroomWidget:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ClassroomWidget(model, **{**GREEDY, **settings})


@pytest.fixture
def widget(vlm):
    made = make_widget(vlm, at_once=2)
    made.add_images([scene(colour=colour) for colour in COLOURS])
    yield made
    made.stop()
    made.close()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload(widget: ClassroomWidget, *files: tuple[str, bytes]) -> None:
    """What the browser sends when files are picked in the FileUpload."""
    widget.upload.value = tuple(
        {
            "name": name,
            "type": "",
            "size": len(data),
            "content": memoryview(data),
            "last_modified": datetime.datetime.now(datetime.UTC),
        }
        for name, data in files
    )


def alone(vlm, colour: str, question: str) -> str:
    return vlm.ask(scene(colour=colour), question, **GREEDY).text


def test_the_same_question_to_every_picture_gives_one_row_each_answered_as_alone(widget, vlm):
    widget.presets.value = DESCRIBE
    widget.run().join()
    answers = widget.answers
    assert list(answers.columns) == list(ANSWER_COLUMNS) == ["image", "question", "answer", "time_s", "error"]
    assert answers["image"].tolist() == ["image 1", "image 2", "image 3"]
    assert answers["question"].tolist() == [DESCRIBE] * 3
    # at_once=2: two VLM.batch calls (2 + 1 pictures); greedy rows of a batch equal each row alone
    assert answers["answer"].tolist() == [alone(vlm, colour, DESCRIBE) for colour in COLOURS]
    assert answers["error"].tolist() == [None, None, None]
    assert (answers["time_s"] > 0).all()
    assert answers["time_s"].iloc[0] == answers["time_s"].iloc[1]  # one batch, one time
    assert (widget.progress.value, widget.progress.max, widget.progress.description) == (3, 3, "3 / 3")
    assert widget.status.value == "Done: 3 answers. Export them below."
    assert widget.error.value == ""
    assert not widget.answer_button.disabled and widget.stop_button.disabled


def test_a_question_per_picture_falls_back_to_the_main_question_where_blank(widget, vlm):
    assert [box.layout.display for box in widget.picture_questions] == ["none"] * 3
    widget.mode.value = PER_PICTURE
    assert [box.layout.display for box in widget.picture_questions] == [None] * 3
    widget.question.value = "What shape is it?"
    widget.picture_questions[1].value = "  What colour is it?  "
    widget.run().join()
    questions = ["What shape is it?", "What colour is it?", "What shape is it?"]
    assert widget.answers["question"].tolist() == questions
    assert widget.answers["answer"].tolist() == [
        alone(vlm, colour, question) for colour, question in zip(COLOURS, questions, strict=True)
    ]
    widget.mode.value = SAME  # the own questions are kept but not used
    widget.run().join()
    assert widget.answers["question"].tolist()[3:] == ["What shape is it?"] * 3
    assert widget.picture_questions[1].value == "  What colour is it?  "


def test_pictures_without_a_question_are_named_and_nothing_is_answered(widget):
    widget.mode.value = PER_PICTURE
    widget.picture_questions[0].value = "What is it?"
    widget.run().join()
    assert html.unescape(widget.error.value) == (
        '<span style="color:#b00020">⚠ No question for image 2, image 3: type one under each of these '
        "pictures, or one in the main question box for the pictures left blank.</span>"
    )
    assert widget.status.value == "Not answered (see the message below). Ready."
    assert widget.answers.empty


def test_no_question_and_no_pictures_say_what_to_do_and_the_widget_keeps_working(widget, vlm):
    widget.run().join()
    assert "No question: type one in the question box (or pick a preset)" in widget.error.value
    empty = make_widget(vlm)
    empty.question.value = "What is it?"
    empty.run().join()
    assert "No pictures: upload some (or open a folder), then press Answer." in empty.error.value
    widget.question.value = "What is it?"
    widget.run().join()
    assert widget.error.value == "" and len(widget.answers) == 3


def test_classroom_presets_cover_the_teachers_questions_in_both_languages():
    labels = [label for label, _ in CLASSROOM_PRESETS]
    for wanted in (
        "Describe the picture",
        "Spot the stereotype",
        "Spot the advertising trick",
        "Read the sign",
    ):
        assert wanted in labels
    for wanted in ("描述图片", "找出刻板印象", "找出广告套路", "读标牌"):
        assert wanted in labels
    assert len(set(labels)) == len(labels) and all(prompt.strip() for _, prompt in CLASSROOM_PRESETS)


def test_a_preset_fills_the_question_and_resets_the_menu(widget):
    prompt = dict(CLASSROOM_PRESETS)["找出广告套路"]
    widget.presets.value = prompt
    assert widget.question.value == prompt
    assert widget.presets.value == ""


def test_answers_of_later_runs_are_added_below_and_clear_answers_empties_the_table(widget):
    widget.question.value = "One?"
    widget.run().join()
    widget.question.value = "Two?"
    widget.run().join()
    assert widget.answers["question"].tolist() == ["One?"] * 3 + ["Two?"] * 3
    assert widget.table.value.count("<tr>") == 1 + 6  # the header and one row per answer
    widget.clear_answers()
    assert widget.answers.empty and "No answers yet" in widget.table.value


def test_open_folder_adds_its_pictures_by_name_pages_apart_and_names_the_broken_ones(vlm, tmp_path):
    scene(colour="blue").save(tmp_path / "b.png")
    scene().save(tmp_path / "A.JPG")
    scene().save(tmp_path / "c.pdf", save_all=True, append_images=[scene(colour="green")])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "sub").mkdir()
    scene().save(tmp_path / "sub" / "inner.png")
    widget = make_widget(vlm)
    assert widget.open_folder(tmp_path) == 4
    assert widget.image_names == ["A.JPG", "b.png", "c.pdf p1", "c.pdf p2"]
    assert "broken.png" in widget.error.value and "not an image" in widget.error.value
    assert widget.image_info.value == "4 pictures · 4 张图片"
    assert len(widget.gallery.children) == 4
    widget.clear_images()
    assert widget.image_names == [] and widget.gallery.children == ()


def test_open_folder_refuses_a_missing_folder_and_one_without_pictures(vlm, tmp_path):
    widget = make_widget(vlm)
    with pytest.raises(InputError, match="nowhere: not a folder on this machine"):
        widget.open_folder(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("text")
    with pytest.raises(InputError, match=r"no pictures in it \(looked for \.png, \.jpg"):
        widget.open_folder(tmp_path)
    widget.folder.value = str(tmp_path / "nowhere")
    widget.open_folder_button.click()
    assert "nowhere: not a folder on this machine" in widget.error.value


def test_uploads_add_to_the_gallery_and_report_bad_files_by_name(widget):
    upload(widget, ("broken.png", b"not an image"), ("sign.png", png_bytes(scene(colour="green"))))
    assert widget.image_names == ["image 1", "image 2", "image 3", "sign.png"]
    assert widget.error.value.startswith('<span style="color:#b00020">⚠ broken.png: not an image')
    assert widget.upload.value == ()


def test_csv_export_reads_back_the_same_table(widget, tmp_path):
    widget.question.value = "图中有什么？"
    widget.run().join()
    back = pd.read_csv(widget.export_csv(tmp_path / "answers.csv"), encoding="utf-8-sig")
    assert list(back.columns) == list(ANSWER_COLUMNS)
    assert back["question"].tolist() == ["图中有什么？"] * 3
    expected = widget.answers
    assert back["image"].tolist() == expected["image"].tolist()
    assert back["answer"].fillna("").tolist() == expected["answer"].tolist()
    assert back["time_s"].tolist() == expected["time_s"].tolist()
    assert back["error"].isna().all()


def test_html_export_is_one_page_with_a_thumbnail_per_row_and_escaped_text(scripted, tmp_path):
    script(scripted, "Paris")
    widget = make_widget(scripted)
    widget.add_images(scene(), name="<b>poster</b>.png")
    widget.add_images(Image.new("RGB", (400, 200), "white"))
    widget.question.value = "What is it? <i>"
    widget.run().join()
    assert widget.answers[["image", "answer", "error"]].values.tolist() == [
        ["<b>poster</b>.png", "Paris", None],
        ["image 2", "Paris", None],
    ]
    page = widget.export_html(tmp_path / "answers.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<p>2 answers · model " in page
    assert page.count('<td class="answer">Paris</td>') == 2
    assert "&lt;b&gt;poster&lt;/b&gt;.png" in page and "<b>poster" not in page
    assert "What is it? &lt;i&gt;" in page
    thumbnails = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    sizes = [Image.open(io.BytesIO(base64.b64decode(data))).size for data in thumbnails]
    assert sizes == [(112, 112), (160, 80)]  # shrunk to 160 pixels at most, never enlarged


def test_stop_keeps_the_answers_made_so_far(vlm):
    widget = make_widget(vlm, at_once=1, max_new_tokens=400)
    widget.add_images([scene(colour=colour) for colour in COLOURS])
    widget.question.value = "Describe it."
    thread = widget.run()
    assert widget.run() is thread and "Still answering" in widget.error.value
    deadline = time.monotonic() + 120
    while widget.progress.value < 1:
        assert time.monotonic() < deadline, "no answer came"
        time.sleep(0.01)
    widget.stop()
    thread.join(timeout=120)
    done = len(widget.answers)
    assert 1 <= done <= 2  # the answer being made when Stop was pressed is kept
    assert widget.status.value == f"Stopped: {done} of 3 pictures answered."
    assert not widget.answer_button.disabled


@pytest.fixture(scope="module")
def served(vlm):
    server = start(vlm)
    yield server
    server.stop()


def test_a_server_client_answers_in_gallery_order_like_the_local_model(served, vlm):
    widget = make_widget(glmlab.Client(served.url), at_once=3)
    widget.add_images([scene(colour=colour) for colour in COLOURS])
    widget.question.value = "What colour is it?"
    widget.run().join()
    assert widget.answers["answer"].tolist() == [
        alone(vlm, colour, "What colour is it?") for colour in COLOURS
    ]
    assert widget.answers["error"].tolist() == [None, None, None]
    assert widget.status.value == "Done: 3 answers. Export them below."


def test_a_server_that_is_down_gives_an_error_on_every_row_and_the_widget_still_works(vlm):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    widget = make_widget(glmlab.Client(url, retries=0, timeout=5))
    widget.add_images([scene(), scene(colour="blue")])
    widget.question.value = "What is it?"
    widget.run().join()
    errors = widget.answers["error"].tolist()
    assert len(errors) == 2 and all(f"{url}: could not connect" in error for error in errors)
    assert widget.answers["answer"].tolist() == ["", ""]
    assert widget.status.value == "Done: 2 answers (2 with an error, see the table). Export them below."
