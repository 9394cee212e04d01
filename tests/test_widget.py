"""VQAWidget driven from Python with the tiny model: what a click does, checked on the widget's values."""

from __future__ import annotations

import datetime
import io
import re
import time
import warnings

import pandas as pd
import pytest
from PIL import Image
from support import gray_clip, scene, script

from glmlab.widgets import HISTORY_COLUMNS, PRESETS, VQAWidget, random_adapter
from glmlab.widgets.backend import describe_error
from glmlab.widgets.preview import BOX_COLOUR

QUESTION = "What is in the picture?"
GREEDY = {"max_new_tokens": 12, "temperature": 0.0, "thinking": False}


@pytest.fixture
def widget(vlm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = VQAWidget(vlm, **GREEDY)
    made.set_image(scene())
    made.question.value = QUESTION
    yield made
    made.stop()
    made.close()


@pytest.fixture
def demo_adapter(vlm, tmp_path):
    """A random LoRA adapter's folder, loaded on the shared model as "demo" (unloaded afterwards)."""
    path = random_adapter(vlm, tmp_path / "demo")
    vlm.load_adapter(path, name="demo", activate=False)
    yield path
    if "demo" in vlm.adapters:
        vlm.unload_adapter("demo")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload(widget: VQAWidget, *files: tuple[str, bytes]) -> None:
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


def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the widget"
        time.sleep(0.01)


def test_ask_streams_the_same_answer_as_vlm_ask(widget, vlm):
    widget.ask().join()
    expected = vlm.ask(scene(), QUESTION, max_new_tokens=12, temperature=0, thinking=False)
    assert widget.answer_text == expected.text
    assert widget.last_answer.raw == expected.raw
    assert widget.status.value == "Done. Ready for another question."
    assert widget.error.value == ""


def test_system_prompt_and_thinking_switch_reach_the_model(widget, vlm):
    widget.system.value = "Answer in one word."
    widget.thinking.value = True
    widget.ask().join()
    expected = vlm.ask(
        scene(), QUESTION, system="Answer in one word.", thinking=True, max_new_tokens=12, temperature=0
    )
    assert widget.last_answer.raw == expected.raw
    assert widget.history["thinking_on"].tolist() == [True]


def test_timing_line_shows_first_token_total_speed_and_token_counts(widget):
    widget.ask().join()
    usage = widget.last_answer.usage
    pattern = (
        rf"first token \d+\.\d\d s · total \d+\.\d\d s · \d+\.\d tokens/s · tokens in "
        rf"{usage.prompt_tokens} \({usage.image_tokens} image\) / out 12"
    )
    assert re.fullmatch(pattern, widget.timing.value)
    assert usage.image_tokens == 16  # one 112x112 picture


def test_history_has_one_row_per_answer_with_settings_and_timing(widget):
    widget.ask().join()
    widget.question.value = "图中有什么？"
    widget.ask().join()
    history = widget.history
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["question"].tolist() == [QUESTION, "图中有什么？"]
    assert history["answer"].iloc[1] == widget.answer_text
    assert history["adapter"].tolist() == ["base model", "base model"]
    assert history["images"].tolist() == ["image", "image"]  # set_image(PIL image) names it "image"
    assert history[["max_new_tokens", "completion_tokens"]].iloc[0].tolist() == [12, 12]
    assert history["thinking_on"].tolist() == [False, False]
    assert (history["total_s"] > 0).all()


def test_export_history_writes_a_csv_that_reads_back(widget, tmp_path):
    widget.question.value = "发票上的总金额是多少？"
    widget.ask().join()
    path = widget.export_history(tmp_path / "history.csv")
    back = pd.read_csv(path, encoding="utf-8-sig")
    assert list(back.columns) == list(HISTORY_COLUMNS)
    assert back["question"].tolist() == ["发票上的总金额是多少？"]
    assert back["completion_tokens"].tolist() == [12]


def test_ask_returns_at_once_and_stop_keeps_what_was_generated(widget):
    widget.max_tokens.value = 2000
    thread = widget.ask()
    assert thread.is_alive()  # the kernel's thread is free while the answer is generated
    assert widget.ask_button.disabled and not widget.stop_button.disabled
    wait_for(lambda: widget.answer_text != "")
    widget.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()
    row = widget.history.iloc[-1]
    assert row["finish_reason"] == "stopped"
    assert 0 < row["completion_tokens"] < 2000
    assert widget.answer_text == widget.last_answer.text != ""
    assert widget.status.value.startswith(f"Stopped: kept {row['completion_tokens']} tokens.")
    assert not widget.ask_button.disabled and widget.stop_button.disabled


def test_a_second_ask_while_answering_returns_the_running_thread(widget):
    widget.max_tokens.value = 2000
    first = widget.ask()
    assert widget.ask() is first
    assert "Still answering" in widget.error.value
    widget.stop()
    first.join(timeout=30)
    assert len(widget.history) == 1


def test_adapter_switch_changes_the_answer_without_reloading(widget, vlm, demo_adapter):
    network = vlm.model
    widget.refresh_adapters()
    assert widget.adapter.options == (("base model", ""), ("demo", "demo"))
    widget.ask().join()
    widget.adapter.value = "demo"
    widget.ask().join()
    expected = vlm.ask(scene(), QUESTION, adapter="demo", max_new_tokens=12, temperature=0, thinking=False)
    assert widget.answer_text == expected.text
    assert widget.history["answer"].iloc[0] != expected.text
    assert widget.history["adapter"].tolist() == ["base model", "demo"]
    assert vlm.model is network and vlm.active_adapter is None


def test_bad_upload_is_reported_by_name_and_good_files_are_kept(widget):
    upload(widget, ("broken.png", b"not an image"), ("circle.png", png_bytes(scene())))
    assert widget.error.value == (
        '<span style="color:#b00020">⚠ broken.png: not an image (PIL could not identify it). '
        "Supported: PNG, JPEG, WebP, GIF, BMP, TIFF, PDF, DICOM.</span>"
    )
    assert widget.image_names == ["circle.png"]
    assert len(widget.preview.children) == 1
    assert widget.upload.value == ()


def test_upload_of_a_pdf_and_a_dicom_gives_one_image_per_page_and_frame(widget, tmp_path):
    from glmlab.data import generate_phantoms

    pdf = io.BytesIO()
    scene().save(pdf, format="PDF", save_all=True, append_images=[scene(colour="blue")])
    dicom = generate_phantoms(1, seed=0, out_dir=tmp_path)[0]["images"][0]
    with open(dicom, "rb") as file:
        upload(widget, ("two.pdf", pdf.getvalue()), ("ct.dcm", file.read()))
    assert widget.image_names == ["two.pdf p1", "two.pdf p2", "ct.dcm"]
    assert [item.children[1].value for item in widget.preview.children] == widget.image_names
    widget.ask().join()
    assert widget.last_answer.usage.image_tokens > 16 * 2


def test_an_uploaded_video_previews_four_of_its_sampled_frames_and_is_asked_about(widget, vlm):
    clip = gray_clip()  # 5 s at 4 fps: glmlab samples 10 frames at 2 fps
    upload(widget, ("clip.mp4", clip))
    assert widget.images == [] and widget.video_names == ["clip.mp4"]
    labels = [item.children[1].value for item in widget.preview.children]
    assert labels == ["clip.mp4 0.0 s", "clip.mp4 1.5 s", "clip.mp4 3.0 s", "clip.mp4 4.5 s"]
    assert widget.image_info.value == "video clip.mp4: 5.0 s, 10 frames sampled"
    widget.ask().join()
    expected = vlm.ask(clip, QUESTION, max_new_tokens=12, temperature=0, thinking=False)
    assert widget.last_answer.raw == expected.raw
    assert widget.last_answer.usage.video_tokens == expected.usage.video_tokens == 20
    assert widget.history["images"].iloc[0] == "clip.mp4"


def test_images_and_a_video_are_not_mixed(widget):
    upload(widget, ("circle.png", png_bytes(scene())), ("clip.mp4", gray_clip()))
    assert widget.image_names == ["circle.png"] and widget.videos == []
    assert widget.error.value == (
        '<span style="color:#b00020">⚠ clip.mp4: images are loaded; ask about images or a video, not '
        "both (Clear first).</span>"
    )


def test_widget_keeps_working_after_an_error(widget):
    widget.question.value = "   "
    widget.ask().join()
    assert "No question: type one in the question box" in widget.error.value
    assert widget.status.value.startswith("Not answered")
    widget.question.value = QUESTION
    widget.ask().join()
    assert widget.error.value == ""
    assert len(widget.history) == 1


def test_an_error_in_the_worker_is_shown_and_the_next_ask_works(widget, vlm, demo_adapter):
    widget.refresh_adapters()
    widget.adapter.value = "demo"
    vlm.unload_adapter("demo")  # removed behind the widget's back
    widget.ask().join()
    assert "adapter &#x27;demo&#x27; is not loaded" in widget.error.value
    vlm.load_adapter(demo_adapter, name="demo", activate=False)
    widget.ask().join()
    assert widget.error.value == ""
    assert widget.history["adapter"].tolist() == ["demo"]


def test_multi_turn_keeps_the_conversation_with_its_earlier_image(widget, vlm):
    widget.multi_turn.value = True
    widget.ask().join()
    widget.question.value = "And its colour?"
    widget.ask().join()
    user, assistant, follow_up, reply = widget.conversation
    assert [item["type"] for item in user["content"]] == ["image", "text"]
    assert assistant == {"role": "assistant", "content": widget.history["answer"].iloc[0]}
    assert follow_up["content"] == [{"type": "text", "text": "And its colour?"}]  # the image is sent once
    expected = vlm.chat([user, assistant, follow_up], max_new_tokens=12, temperature=0, thinking=False)
    assert reply["content"] == expected.text
    assert widget.last_answer.usage.prompt_tokens > widget.history["prompt_tokens"].iloc[0]
    widget.new_conversation()
    assert widget.conversation == []


def test_grounding_boxes_are_drawn_on_the_first_preview(widget):
    widget.set_image(Image.new("RGB", (200, 100), "white"))
    widget.show_boxes([[250, 250, 750, 750]])
    thumb = Image.open(io.BytesIO(widget.thumbnails[0].value))
    assert thumb.size == (200, 100)
    assert thumb.getpixel((50, 50)) == BOX_COLOUR  # corner (250/1000*200, 250/1000*100)
    assert thumb.getpixel((100, 50)) == (255, 255, 255)


def test_a_boxed_value_is_shown_as_the_boxed_answer_not_drawn_as_a_box(scripted):
    script(scripted, "<|begin_of_box|>Paris<|end_of_box|>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = VQAWidget(scripted, **GREEDY)
    try:
        made.set_image(scene())
        made.question.value = QUESTION
        made.ask().join()
        answer = made.last_answer
        assert (answer.text, answer.boxes, answer.boxed) == ("Paris", [], ["Paris"])
        assert "<b>Boxed answer 框内答案:</b> <code>Paris</code>" in made.answer.value
        assert made.history["boxed"].tolist() == ['["Paris"]'] and made.history["boxes"].tolist() == ["[]"]
    finally:
        made.stop()
        made.close()


def test_the_thinking_budget_field_cuts_a_scripted_models_thinking(scripted):
    script(scripted, "<think>abcdefghij</think>XYZ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = VQAWidget(scripted, max_new_tokens=40, temperature=0.0, thinking=True)
    try:
        made.question.value = QUESTION
        made.thinking_budget.value = 3
        made.ask().join()
        answer = made.last_answer
        assert (answer.thinking, answer.text, answer.thinking_truncated) == ("abc", "XYZ", True)
    finally:
        made.stop()
        made.close()


def test_preset_fills_the_question_and_resets_the_menu(widget):
    label, prompt = PRESETS[3]
    widget.presets.value = prompt
    assert widget.question.value == prompt and label == "文字识别（OCR）"
    assert widget.presets.value == ""


def test_enter_asks_when_enter_is_typed_at_the_end_of_the_question(widget):
    widget.enter_asks.value = True
    widget.question.value = QUESTION + "\n"
    wait_for(lambda: len(widget.history) == 1)
    assert widget.question.value == QUESTION
    assert widget.history["question"].tolist() == [QUESTION]


def test_out_of_memory_is_described_in_plain_words():
    import torch

    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert describe_error(error) == (
        "Out of GPU memory while answering. Lower Max tokens, ask about fewer or smaller images, or load "
        "the model with quantize='4bit'; the widget is ready for another question."
    )
