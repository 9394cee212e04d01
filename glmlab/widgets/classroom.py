"""`ClassroomWidget`: a teacher's gallery of pictures, one question to all of them or one per picture, the
answers in a table to export. Built from standard ipywidgets 8 only, like `VQAWidget`.

A teacher uploads pictures (or opens a folder on the machine Jupyter runs on), picks a preset question
(describe, spot the stereotype, spot the advertising trick, read the sign) or types one, and presses
Answer. The pictures are answered in order, several at once (`VLM.batch` for a local model, parallel
requests for a server `Client`, see `backend.answer_each`), with a progress bar; each answer becomes a
row of the table (`answer_sheet.COLUMNS`), which exports as CSV or as a web page with thumbnails.

As in `VQAWidget`, the answers are made on a worker thread so the kernel stays free for the Stop click;
errors land on the error line in plain words and the widget keeps working.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
from PIL import Image

from glmlab.errors import InputError
from glmlab.images import to_pil
from glmlab.widgets.answer_sheet import AnswerSheet
from glmlab.widgets.backend import Pair, backend_for, describe_error
from glmlab.widgets.presets import CLASSROOM_PRESETS
from glmlab.widgets.preview import numbered_names, thumbnail_png
from glmlab.widgets.vqa import ACCEPT

logger = logging.getLogger(__name__)

# the file kinds both widgets take (one list, in vqa.py); a folder is read for files with these suffixes
FOLDER_SUFFIXES = tuple(kind for kind in ACCEPT.split(",") if kind.startswith("."))
SAME, PER_PICTURE = "same", "per_picture"  # the two ways to ask (the mode buttons' values)
GALLERY_PX = 128  # longest side of a gallery thumbnail
TITLE = "Classroom answers · 课堂问答"


@dataclasses.dataclass
class Picture:
    """A picture of the gallery, with its own question box (shown when each picture has its question)."""

    image: Image.Image
    name: str
    question: widgets.Text
    card: widgets.VBox


@dataclasses.dataclass
class Run:
    """One press of Answer, as the controls stood then (read on the kernel's thread)."""

    pictures: list[Picture]
    questions: list[str]  # one per picture, "" where it has none
    options: dict[str, Any]
    at_once: int

    def pairs(self) -> list[Pair]:
        """(picture, question) to answer, in gallery order; raises InputError naming what is missing."""
        if not self.pictures:
            raise InputError("No pictures: upload some (or open a folder), then press Answer.")
        missing = [
            picture.name
            for picture, question in zip(self.pictures, self.questions, strict=True)
            if not question
        ]
        if len(missing) == len(self.pictures):
            raise InputError(
                "No question: type one in the question box (or pick a preset), then press Answer."
            )
        if missing:
            raise InputError(
                f"No question for {', '.join(missing)}: type one under each of these pictures, or one in "
                "the main question box for the pictures left blank."
            )
        return [
            (picture.image, question) for picture, question in zip(self.pictures, self.questions, strict=True)
        ]


class ClassroomWidget(widgets.VBox):
    """Ask about a gallery of pictures from a notebook, without code: answers in a table, CSV and HTML export.

    model: a `VLM` from `glmlab.load(...)` or a `glmlab.Client` of a server.
    max_new_tokens, temperature (0 = greedy), thinking, at_once: the controls' starting values; at_once is
    the batch size of a local model and the number of requests in flight to a server.

    Programmatic use (what the buttons do): `add_images(...)`, `open_folder(path)`, `clear_images()`,
    `mode.value` (SAME or PER_PICTURE), `question.value`, `picture_questions[i].value`, `presets.value`,
    `run()` (returns the worker thread: `.join()` it), `stop()`, `answers` (a DataFrame),
    `export_csv(path)`, `export_html(path)`, `clear_answers()`; `status.value`, `error.value`,
    `progress.value`.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        thinking: bool = False,
        at_once: int = 4,
    ) -> None:
        super().__init__()
        self.backend = backend_for(model)
        self.model = model
        self.pictures: list[Picture] = []
        self.last_error: BaseException | None = None
        self._sheet = AnswerSheet()
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._make_inputs()
        self._make_settings(max_new_tokens, temperature, thinking, at_once)
        self._make_outputs()
        self._mark_classes()
        self._connect()
        self._arrange()

    # ---- layout --------------------------------------------------------------------------------

    def _make_inputs(self) -> None:
        full = widgets.Layout(width="100%")
        self.upload = widgets.FileUpload(accept=ACCEPT, multiple=True, description="Pictures 图片")
        self.folder = widgets.Text(
            placeholder="or a folder on the Jupyter machine 或服务器上的文件夹",
            layout=widgets.Layout(width="320px"),
        )
        self.open_folder_button = widgets.Button(
            description="Open folder 打开", icon="folder-open", layout=widgets.Layout(width="auto")
        )
        self.clear_images_button = widgets.Button(
            description="Clear pictures 清空", icon="trash", layout=widgets.Layout(width="auto")
        )
        self.gallery = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.image_info = widgets.HTML()
        self.mode = widgets.ToggleButtons(
            options=[
                ("Same question for all 同一问题", SAME),
                ("A question per picture 每图一问", PER_PICTURE),
            ],
            value=SAME,
            style={"button_width": "auto"},
        )
        self.presets = widgets.Dropdown(
            options=[("Classroom questions 课堂提问…", "")] + CLASSROOM_PRESETS, value="", layout=full
        )
        self.question = widgets.Textarea(
            placeholder="The question for every picture… 对每张图片的问题…", rows=3, layout=full
        )
        self.answer_button = widgets.Button(description="Answer 回答", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop 停止", icon="stop", disabled=True)

    def _make_settings(self, max_new_tokens: int, temperature: float, thinking: bool, at_once: int) -> None:
        wide_label = {"description_width": "initial"}
        self.thinking = widgets.Checkbox(value=thinking, description="Thinking 思考", indent=False)
        self.max_tokens = widgets.BoundedIntText(
            value=max_new_tokens, min=1, max=65536, description="Max tokens", style=wide_label,
            layout=widgets.Layout(width="180px"),
        )  # fmt: skip
        self.temperature = widgets.BoundedFloatText(
            value=temperature, min=0.0, max=2.0, step=0.1, description="Temperature (0 = greedy)",
            style=wide_label, layout=widgets.Layout(width="240px"),
        )  # fmt: skip
        self.at_once = widgets.BoundedIntText(
            value=at_once, min=1, max=64, description="At once 同时", style=wide_label,
            layout=widgets.Layout(width="160px"),
        )  # fmt: skip

    def _make_outputs(self) -> None:
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="0 / 0")
        self.status = widgets.Label("Ready.")
        self.error = widgets.HTML()
        self.table = widgets.HTML(self._sheet.table_html())
        self.export_csv_button = widgets.Button(
            description="Export CSV 导出", icon="download", layout=widgets.Layout(width="auto")
        )
        self.export_html_button = widgets.Button(
            description="Export web page 导出网页", icon="download", layout=widgets.Layout(width="auto")
        )
        self.clear_answers_button = widgets.Button(
            description="Clear answers 清空回答", icon="trash", layout=widgets.Layout(width="auto")
        )
        self._show_gallery_info()

    def _arrange(self) -> None:
        title = widgets.HTML(f"<b>GLM-V classroom · 课堂看图</b> — {html.escape(self.backend.name)}")
        self.children = [
            title,
            widgets.HBox([self.upload, self.folder, self.open_folder_button, self.clear_images_button]),
            self.image_info,
            self.gallery,
            self.mode,
            self.presets,
            self.question,
            widgets.HBox([self.answer_button, self.stop_button, self.thinking]),
            widgets.HBox([self.max_tokens, self.temperature, self.at_once]),
            widgets.HBox([self.progress, self.status]),
            self.error,
            self.table,
            widgets.HBox([self.export_csv_button, self.export_html_button, self.clear_answers_button]),
        ]

    def _mark_classes(self) -> None:
        """CSS classes name the parts for browser tests and for users' own styling."""
        self.add_class("glmlab-classroom")
        for part in ("upload", "gallery", "question", "progress", "status", "error", "table"):
            getattr(self, part).add_class(f"glmlab-{part}")
        self.answer_button.add_class("glmlab-answer")
        self.stop_button.add_class("glmlab-stop")

    def _connect(self) -> None:
        self.upload.observe(self._on_upload, "value")
        self.presets.observe(self._on_preset, "value")
        self.mode.observe(lambda _: self._show_mode(), "value")
        self.open_folder_button.on_click(lambda _: self._open_folder_clicked())
        self.clear_images_button.on_click(lambda _: self.clear_images())
        self.answer_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.export_csv_button.on_click(lambda _: self._export_clicked(self.export_csv))
        self.export_html_button.on_click(lambda _: self._export_clicked(self.export_html))
        self.clear_answers_button.on_click(lambda _: self.clear_answers())

    # ---- pictures ------------------------------------------------------------------------------

    def add_images(self, source: Any, name: str | None = None) -> None:
        """Add the pictures of `source` (any input `glmlab.images.to_pil` takes; a list for several; a
        PDF adds its pages). Bad input raises InputError.

        name: the label in the gallery and the table (default: the file name, else "image N", N its
        place in the gallery).
        """
        for item in source if isinstance(source, list | tuple) else [source]:
            is_path = isinstance(item, Path) or (isinstance(item, str) and not item.startswith("data:"))
            label = name or (Path(item).name if is_path else f"image {len(self.pictures) + 1}")
            self._add(to_pil(item, allow_urls=self.backend.allow_urls), label)

    def open_folder(self, folder: str | Path) -> int:
        """Add every picture file of `folder` (not its subfolders), by file name; returns how many images
        were added. Files that do not open are skipped and named on the error line."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise InputError(
                f"{folder}: not a folder on this machine. Type the path of a folder of pictures."
            )
        files = sorted(
            item for item in path.iterdir() if item.suffix.lower() in FOLDER_SUFFIXES and item.is_file()
        )
        if not files:
            raise InputError(f"{folder}: no pictures in it (looked for {', '.join(FOLDER_SUFFIXES)}).")
        before = len(self.pictures)
        self._show_error(" ".join(self._add_files((file.name, file) for file in files)))
        return len(self.pictures) - before

    def clear_images(self) -> None:
        for picture in self.pictures:
            for part in (*picture.card.children, picture.card):
                part.close()
        self.pictures = []
        self.gallery.children = []
        self._show_gallery_info()

    @property
    def image_names(self) -> list[str]:
        return [picture.name for picture in self.pictures]

    @property
    def picture_questions(self) -> list[widgets.Text]:
        """Each picture's own question box, in gallery order (used in PER_PICTURE mode)."""
        return [picture.question for picture in self.pictures]

    def _add(self, images: list[Image.Image], label: str) -> None:
        for image, name in zip(images, numbered_names(label, len(images)), strict=True):
            self.pictures.append(self._picture(image, name))
        self.gallery.children = [picture.card for picture in self.pictures]
        self._show_gallery_info()

    def _picture(self, image: Image.Image, name: str) -> Picture:
        question = widgets.Text(placeholder="Its question 这张图的问题", layout=widgets.Layout(width="180px"))
        question.layout.display = None if self.mode.value == PER_PICTURE else "none"
        thumb = widgets.Image(value=thumbnail_png(image, max_side=GALLERY_PX), format="png")
        card = widgets.VBox(
            [thumb, widgets.Label(name, layout=widgets.Layout(max_width="180px")), question],
            layout=widgets.Layout(margin="2px", align_items="center"),
        )
        return Picture(image=image, name=name, question=question, card=card)

    def _add_files(self, files: Any) -> list[str]:
        """Add (name, bytes or path) files; returns one sentence per file that did not open."""
        problems = []
        for name, content in files:
            try:
                loaded = to_pil(content)
            except Exception as error:  # shown on the error line; the good files are kept
                problems.append(describe_error(error).replace("bytes input", name, 1))
                continue
            self._add(loaded, name)
        return problems

    def _on_upload(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            return
        problems = self._add_files((file["name"], bytes(file["content"])) for file in change["new"])
        self.upload.value = ()  # frees the uploaded bytes and lets the same files be picked again
        self._show_error(" ".join(problems))

    def _open_folder_clicked(self) -> None:
        try:
            added = self.open_folder(self.folder.value.strip())
        except InputError as error:
            self._show_error(str(error))
            return
        self.status.value = f"Added {added} pictures from {self.folder.value.strip()}."

    def _show_gallery_info(self) -> None:
        count = len(self.pictures)
        self.image_info.value = (
            f"{count} picture{'s' if count != 1 else ''} · {count} 张图片"
            if count
            else "<i>No pictures yet: upload some, or type a folder and press Open folder. 请上传图片。</i>"
        )

    def _show_mode(self) -> None:
        per_picture = self.mode.value == PER_PICTURE
        for picture in self.pictures:
            picture.question.layout.display = None if per_picture else "none"
        self.question.placeholder = (
            "The question for the pictures whose own box is blank… 未单独提问的图片使用此问题…"
            if per_picture
            else "The question for every picture… 对每张图片的问题…"
        )

    # ---- answering -----------------------------------------------------------------------------

    def run(self) -> threading.Thread:
        """Answer every picture on a worker thread (Answer button); returns the thread.

        While a run is going on, a second run only shows a message and returns the running thread.
        """
        if self._thread is not None and self._thread.is_alive():
            self._show_error("Still answering: wait, or press Stop.")
            return self._thread
        plan = self._plan()
        self._stop_requested.clear()
        self._set_busy(True, len(plan.pictures))
        self._thread = threading.Thread(target=self._work, args=(plan,), daemon=True, name="glmlab-classroom")
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop after the answers being made now (a local batch, or the requests in flight); they are kept."""
        self._stop_requested.set()

    def _plan(self) -> Run:
        main = self.question.value.strip()
        per_picture = self.mode.value == PER_PICTURE
        questions = [
            (picture.question.value.strip() if per_picture else "") or main for picture in self.pictures
        ]
        options = {
            "thinking": self.thinking.value,
            "max_new_tokens": self.max_tokens.value,
            "temperature": self.temperature.value,
        }
        return Run(list(self.pictures), questions, options, self.at_once.value)

    def _work(self, plan: Run) -> None:
        """The worker thread: answer the pictures in order, one table row each. Never raises."""
        done = failed = 0
        try:
            pairs = plan.pairs()
            answers = self.backend.answer_each(
                pairs, self._stop_requested, at_once=plan.at_once, **plan.options
            )
            # not strict: the answers end early when Stop is pressed
            for picture, (_, question), answer in zip(plan.pictures, pairs, answers, strict=False):
                self._sheet.add(picture.name, picture.image, question, answer)
                done, failed = done + 1, failed + (answer.error is not None)
                self._show_progress(done, len(pairs))
                self.table.value = self._sheet.table_html()
            self.status.value = self._summary(done, failed, len(pairs))
        except Exception as error:  # shown on the error line; the full error stays in last_error
            logger.debug("classroom run failed", exc_info=True)
            self.last_error = error
            self._show_error(describe_error(error))
            self.status.value = (
                "Not answered (see the message below). Ready." if not done else self.status.value
            )
        finally:
            self._set_busy(False)

    def _summary(self, done: int, failed: int, total: int) -> str:
        errors = f" ({failed} with an error, see the table)" if failed else ""
        if done < total:
            return f"Stopped: {done} of {total} pictures answered{errors}."
        return f"Done: {done} answers{errors}. Export them below."

    def _set_busy(self, busy: bool, total: int = 0) -> None:
        self.answer_button.disabled = busy
        self.stop_button.disabled = not busy
        if busy:
            self._show_error("")
            self._show_progress(0, total)
            self.status.value = "Answering… (Stop keeps the answers made so far)"

    def _show_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.progress.description = f"{done} / {total}"

    def _show_error(self, message: str) -> None:
        self.error.value = f'<span style="color:#b00020">⚠ {html.escape(message)}</span>' if message else ""

    def _on_preset(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.question.value = change["new"]
            self.presets.value = ""  # back to the placeholder, so the same preset can be picked again

    # ---- answers -------------------------------------------------------------------------------

    @property
    def answers(self) -> pd.DataFrame:
        """Every answer so far, one row per picture and question (columns `answer_sheet.COLUMNS`).

        time_s is the seconds the answer took; on a local model the answers of one batch share it.
        """
        return self._sheet.frame()

    def clear_answers(self) -> None:
        self._sheet.clear()
        self.table.value = self._sheet.table_html()

    def export_csv(self, path: str | Path | None = None) -> Path:
        """Write `answers` as CSV to `path` (default: glmlab-classroom-<time>.csv here); returns the path."""
        return self._sheet.to_csv(path or _default_path("csv"))

    def export_html(self, path: str | Path | None = None) -> Path:
        """Write the answers as a web page with a thumbnail of each picture to `path` (default:
        glmlab-classroom-<time>.html here); returns the path."""
        return self._sheet.to_html(path or _default_path("html"), title=TITLE, model=self.backend.name)

    def _export_clicked(self, export: Any) -> None:
        try:
            path = export()
        except OSError as error:
            self._show_error(f"The answers could not be saved ({error}).")
            return
        self.status.value = f"Answers saved to {path.resolve()}"


def _default_path(suffix: str) -> str:
    return f"glmlab-classroom-{time.strftime('%Y%m%d-%H%M%S')}.{suffix}"
