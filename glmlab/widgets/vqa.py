"""`VQAWidget`: ask a GLM-V model about images from a notebook, built from standard ipywidgets 8 only.

It is a front: images go through `glmlab.images.to_pil`, videos through `glmlab.videos.load_video` (the
preview shows a few of the sampled frames, with their times), questions through `glmlab.prompts`, answers come
back as `glmlab.answer.Answer` from a local `VLM` or a server `Client` (see `backend`). With no custom
front-end code it renders wherever ipywidgets 8 does: JupyterLab, Notebook 7, VS Code.

Generation runs on a worker thread that consumes the model's `Stream` and sets widget values (ipywidgets
sends those updates from any thread), so the kernel stays free to receive the Stop click and the UI never
freezes. Errors end up on the widget's error line in plain words; the widget keeps working after them.

Keyboard: Ctrl+Enter cannot ask. Standard ipywidgets send no key events to the kernel (the Textarea view
stops keydown propagation, so Jupyter's own Ctrl+Enter does not re-run the cell either, and it syncs only
its value), and a script inside an HTML widget does not run in JupyterLab. The keyboard ways to ask are:
Tab from the question box moves the focus to Ask, then Enter (or Space) presses it; or tick "Enter asks",
which asks when Enter is typed at the end of the question (multi-line questions are then pasted).
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

from glmlab import prompts
from glmlab.answer import Answer, split_thinking, strip_box_tags
from glmlab.errors import InputError
from glmlab.images import to_pil
from glmlab.videos import VIDEO_EXTENSIONS, Video, is_video, load_video
from glmlab.widgets.backend import BASE, backend_for, describe_error
from glmlab.widgets.history import History, timing_line
from glmlab.widgets.presets import PRESETS
from glmlab.widgets.preview import numbered_names, thumbnail_png

logger = logging.getLogger(__name__)

ACCEPT = (
    "image/*,.png,.jpg,.jpeg,.webp,.gif,.bmp,.tif,.tiff,.pdf,application/pdf,.dcm,.dicom,application/dicom,"
    "video/*," + ",".join(VIDEO_EXTENSIONS)
)
PREVIEW_FRAMES = 4  # sampled frames of a video shown in the preview (spread over the clip)
UPDATE_INTERVAL_S = 0.1  # how often streamed text is pushed to the browser (each push is one message)


@dataclasses.dataclass
class Request:
    """One question as the controls stood when Ask was pressed (read on the kernel's thread)."""

    question: str
    images: list[Image.Image | Video]  # the images, or the videos (a prompt holds one kind)
    image_names: list[str]
    system: str
    earlier: list[dict[str, Any]]
    adapter: str
    options: dict[str, Any]
    multi_turn: bool

    def messages(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The conversation to send, and the new user message in it."""
        if not self.question:
            raise InputError("No question: type one in the question box (or pick a preset), then press Ask.")
        user = prompts.question_messages(self.images, self.question)[0]
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.earlier + [user], user


class VQAWidget(widgets.VBox):
    """Visual question answering in a notebook: images, a question, a streamed answer, timing and history.

    model: a `VLM` from `glmlab.load(...)` or a `glmlab.Client` of a server.
    max_new_tokens, temperature (0 = greedy), thinking, system, multi_turn: the controls' starting values.

    Programmatic use (what the buttons do): `set_image(...)`, `question.value = ...`, `ask()` (returns the
    worker thread: `.join()` it), `stop()`, `adapter.value = name`, `history` (a DataFrame),
    `export_history(path)`; `status.value`, `timing.value`, `error.value`, `answer_text`, `last_answer`.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_new_tokens: int = 1024,
        temperature: float = 0.8,
        thinking: bool = True,
        system: str = "",
        multi_turn: bool = False,
    ) -> None:
        super().__init__()
        self.backend = backend_for(model)
        self.model = model
        self.images: list[Image.Image] = []
        self.image_names: list[str] = []
        self.videos: list[Video] = []  # sampled clips (images or videos, never both: one kind a prompt)
        self.video_names: list[str] = []
        self.conversation: list[dict[str, Any]] = []  # earlier turns, kept in multi-turn mode
        self.last_answer: Answer | None = None
        self.last_error: BaseException | None = None
        self._answer_text = ""
        self._history = History()
        self._images_sent = False  # multi-turn: the current images are already in the conversation
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._stop_requested = threading.Event()
        self._build(max_new_tokens, temperature, thinking, system, multi_turn)
        self.refresh_adapters()

    # ---- layout --------------------------------------------------------------------------------

    def _build(
        self, max_new_tokens: int, temperature: float, thinking: bool, system: str, multi_turn: bool
    ) -> None:
        self._make_inputs(system, thinking, multi_turn)
        self._make_settings(max_new_tokens, temperature)
        self._make_outputs()
        self._mark_classes()
        self._connect()
        self._arrange()

    def _make_inputs(self, system: str, thinking: bool, multi_turn: bool) -> None:
        full = widgets.Layout(width="100%")
        self.upload = widgets.FileUpload(accept=ACCEPT, multiple=True, description="Images/video 图片/视频")
        self.clear_images_button = widgets.Button(description="Clear images", icon="trash")
        self.preview = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.image_info = widgets.HTML("<i>No image or video: upload one, or ask without.</i>")
        self.presets = widgets.Dropdown(
            options=[("Preset prompts 预设提示…", "")] + PRESETS, value="", layout=full
        )
        self.question = widgets.Textarea(
            placeholder="Ask about the images… 关于图片提问…", rows=4, layout=full
        )
        self.system = widgets.Textarea(
            value=system, placeholder="System prompt (optional) 系统提示（可选）", rows=2, layout=full
        )
        self.thinking = widgets.Checkbox(value=thinking, description="Thinking 思考", indent=False)
        self.multi_turn = widgets.Checkbox(value=multi_turn, description="Multi-turn 多轮对话", indent=False)
        self.enter_asks = widgets.Checkbox(value=False, description="Enter asks 回车提问", indent=False)
        self.ask_button = widgets.Button(
            description="Ask 提问",
            button_style="primary",
            icon="paper-plane",
            tooltip="Ask (keyboard: Tab from the question, then Enter)",
        )
        self.stop_button = widgets.Button(description="Stop 停止", icon="stop", disabled=True)
        self.new_conversation_button = widgets.Button(
            description="New conversation 新对话", layout=widgets.Layout(width="auto")
        )

    def _make_settings(self, max_new_tokens: int, temperature: float) -> None:
        wide_label = {"description_width": "initial"}
        self.max_tokens = widgets.BoundedIntText(
            value=max_new_tokens,
            min=1,
            max=65536,
            description="Max tokens",
            style=wide_label,
            layout=widgets.Layout(width="180px"),
        )
        self.thinking_budget = widgets.BoundedIntText(
            value=0,
            min=0,
            max=65536,
            description="Thinking budget (0 = none)",
            tooltip="Most tokens the model may think before it must answer (max_thinking_tokens).",
            style=wide_label,
            layout=widgets.Layout(width="260px"),
        )
        self.temperature = widgets.BoundedFloatText(
            value=temperature,
            min=0.0,
            max=2.0,
            step=0.1,
            description="Temperature (0 = greedy)",
            style=wide_label,
            layout=widgets.Layout(width="240px"),
        )
        self.adapter = widgets.Dropdown(description="Adapter")
        self.refresh_button = widgets.Button(
            icon="refresh", tooltip="Reload the adapter list", layout=widgets.Layout(width="40px")
        )

    def _make_outputs(self) -> None:
        self.status = widgets.Label("Ready.")
        self.error = widgets.HTML()
        self.answer = widgets.HTML(
            layout=widgets.Layout(border="1px solid #ccc", padding="2px 8px", min_height="2.5em")
        )
        self.thinking_text = widgets.HTML()
        self.thinking_box = widgets.Accordion(children=[self.thinking_text], titles=("Thinking 思考过程",))
        self.timing = widgets.Label()
        self.history_table = widgets.HTML(self._history.to_html())
        self.export_button = widgets.Button(description="Export CSV 导出", icon="download")
        self.history_box = widgets.Accordion(
            children=[widgets.VBox([self.history_table, self.export_button])], titles=("History 历史",)
        )

    def _arrange(self) -> None:
        left = widgets.VBox(
            [widgets.HBox([self.upload, self.clear_images_button]), self.image_info, self.preview],
            layout=widgets.Layout(width="36%", padding="0 8px 0 0"),
        )
        right = widgets.VBox(
            [  # Ask right after the question: Tab from the question box reaches it
                self.presets,
                self.question,
                widgets.HBox([self.ask_button, self.stop_button, self.new_conversation_button]),
                self.system,
                widgets.HBox([self.thinking, self.multi_turn, self.enter_asks]),
                widgets.HBox([self.max_tokens, self.thinking_budget, self.temperature]),
                widgets.HBox([self.adapter, self.refresh_button]),
            ],
            layout=widgets.Layout(width="64%"),
        )
        title = widgets.HTML(f"<b>GLM-V visual questions · 视觉问答</b> — {html.escape(self.backend.name)}")
        self.children = [
            title,
            widgets.HBox([left, right]),
            self.status,
            self.error,
            self.thinking_box,
            self.answer,
            self.timing,
            self.history_box,
        ]

    def _mark_classes(self) -> None:
        """CSS classes name the parts for browser tests and for users' own styling."""
        self.add_class("glmlab-vqa")
        for part in (
            "upload",
            "preview",
            "question",
            "max_tokens",
            "thinking_budget",
            "adapter",
            "answer",
            "timing",
            "status",
            "error",
            "history_table",
        ):
            getattr(self, part).add_class(f"glmlab-{part.replace('_', '-')}")
        self.ask_button.add_class("glmlab-ask")
        self.stop_button.add_class("glmlab-stop")
        self.thinking_box.add_class("glmlab-thinking")
        self.history_box.add_class("glmlab-history")

    def _connect(self) -> None:
        self.upload.observe(self._on_upload, "value")
        self.presets.observe(self._on_preset, "value")
        self.question.observe(self._on_question_typed, "value")
        self.multi_turn.observe(lambda _: self.new_conversation(), "value")
        self.clear_images_button.on_click(lambda _: self.clear_images())
        self.refresh_button.on_click(lambda _: self.refresh_adapters())
        self.ask_button.on_click(lambda _: self.ask())
        self.stop_button.on_click(lambda _: self.stop())
        self.new_conversation_button.on_click(lambda _: self.new_conversation())
        self.export_button.on_click(lambda _: self._export_clicked())

    # ---- images --------------------------------------------------------------------------------

    def set_image(self, source: Any, name: str | None = None) -> None:
        """Replace the images with `source` (any input `glmlab.images.to_pil` takes; a list for several)."""
        self.clear_images()
        self.add_image(source, name)

    def add_image(self, source: Any, name: str | None = None) -> None:
        """Add the images of `source` (a PDF adds its pages, a DICOM its frames), or a video (a path,
        bytes, data:video/ URL or `glmlab.videos.Video`: sampled now, a few frames previewed). Bad
        input raises InputError.

        name: the images' label in the preview and the history (default: the file name, else "image").
        """
        sources = source if isinstance(source, list | tuple) else [source]
        for item in sources:
            is_path = isinstance(item, Path) or (isinstance(item, str) and not item.startswith("data:"))
            label = name or (Path(item).name if is_path else "video" if is_video(item) else "image")
            if is_video(item):
                self._add_video(load_video(item), label)
            else:
                self._add_images(to_pil(item, allow_urls=self.backend.allow_urls), [label])

    def clear_images(self) -> None:
        """Forget the images and videos."""
        self.images, self.image_names = [], []
        self.videos, self.video_names = [], []
        self._images_sent = False
        self._show_preview()

    def _add_images(self, images: list[Image.Image], names: list[str]) -> None:
        if len(images) > 1 and len(names) == 1:
            names = numbered_names(names[0], len(images))
        if self.videos:
            raise InputError(
                f"{names[0]}: a video is loaded; ask about images or a video, not both (Clear first)."
            )
        self.images += images
        self.image_names += names
        self._images_sent = False
        self._show_preview()

    def _add_video(self, video: Video, name: str) -> None:
        if self.images:
            raise InputError(
                f"{name}: images are loaded; ask about images or a video, not both (Clear first)."
            )
        self.videos.append(video)
        self.video_names.append(name)
        self._images_sent = False
        self._show_preview()

    def _on_upload(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            return
        self.clear_images()
        problems = []
        for file in change["new"]:
            content = bytes(file["content"])
            try:
                if is_video(content):
                    self._add_video(load_video(content), file["name"])
                else:
                    self._add_images(to_pil(content), [file["name"]])
            except Exception as error:  # shown on the error line; the good files are kept
                problems.append(describe_error(error).replace("bytes input", file["name"], 1))
        self.upload.value = ()  # frees the uploaded bytes and lets the same file be picked again
        self._show_error(" ".join(problems))

    @property
    def thumbnails(self) -> list[widgets.Image]:
        """The preview's Image widgets (PNG bytes in `.value`), one per image."""
        return [item.children[0] for item in self.preview.children]

    def show_boxes(self, boxes: list[list[float]]) -> None:
        """Draw grounding boxes (0-1000 scale, as in `Answer.boxes`) on the first image's preview."""
        self._show_preview(boxes)

    def _pictures(self) -> list[tuple[Image.Image, str]]:
        """What the preview shows: each image, or a few sampled frames of each video with their times."""
        pictures = list(zip(self.images, self.image_names, strict=True))
        for video, name in zip(self.videos, self.video_names, strict=True):
            frames, times = video.images(), video.timestamps
            step = max(1, -(-len(frames) // PREVIEW_FRAMES))  # rounded up: at most PREVIEW_FRAMES shown
            pictures += [(frames[i], f"{name} {times[i]:.1f} s") for i in range(0, len(frames), step)]
        return pictures

    def _show_preview(self, boxes: list[list[float]] | None = None) -> None:
        old = self.preview.children
        self.preview.children = [
            widgets.VBox(
                [
                    widgets.Image(
                        value=thumbnail_png(image, (boxes or []) if index == 0 else []),
                        format="png",
                        layout=widgets.Layout(width="auto"),
                    ),
                    widgets.Label(name),
                ],
                layout=widgets.Layout(margin="2px"),
            )
            for index, (image, name) in enumerate(self._pictures())
        ]  # (no Image.tooltip: ipywidgets 8.1's ImageView fails to render with one)
        for child in old:
            for part in (*child.children, child):
                part.close()
        names = ", ".join(self.image_names)
        if self.videos:
            self.image_info.value = "; ".join(
                f"video {html.escape(name)}: {video.info.duration_s:.1f} s, {len(video.indices)} frames sampled"
                for video, name in zip(self.videos, self.video_names, strict=True)
            )
        elif self.images:
            self.image_info.value = f"{len(self.images)} image(s): {html.escape(names)}"
        else:
            self.image_info.value = "<i>No image or video: upload one, or ask without.</i>"

    # ---- asking --------------------------------------------------------------------------------

    def ask(self) -> threading.Thread:
        """Ask the question about the images (the Ask button); returns the worker thread (`.join()` it).

        The answer streams into `answer`; at the end `timing`, `history` and `last_answer` are updated.
        While an answer is being generated a second ask only shows a message and returns the running thread.
        """
        if self._thread is not None and self._thread.is_alive():
            self._show_error("Still answering the last question: wait, or press Stop.")
            return self._thread
        request = self._request()
        self._stop_requested.clear()
        self._set_busy(True)
        self._thread = threading.Thread(
            target=self._work, args=(request,), daemon=True, name="glmlab-widget-ask"
        )
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """End the current generation early; what was generated is kept (and recorded as "stopped")."""
        self._stop_requested.set()
        if self._stream is not None:
            self._stream.stop()

    def new_conversation(self) -> None:
        """Forget earlier turns (multi-turn mode); the next question starts afresh with the current images."""
        self.conversation = []
        self._images_sent = False
        self.status.value = "New conversation." if self.multi_turn.value else self.status.value

    def _request(self) -> Request:
        multi_turn = self.multi_turn.value
        attach = not (multi_turn and self._images_sent)
        options = {
            "thinking": self.thinking.value,
            "max_new_tokens": self.max_tokens.value,
            "temperature": self.temperature.value,
        }
        if self.thinking.value and self.thinking_budget.value > 0:
            options["max_thinking_tokens"] = self.thinking_budget.value
        return Request(
            question=self.question.value.strip(),
            images=list(self.images or self.videos) if attach else [],
            image_names=list(self.image_names or self.video_names),
            system=self.system.value.strip(),
            earlier=list(self.conversation) if multi_turn else [],
            adapter=self.adapter.value or BASE,
            options=options,
            multi_turn=multi_turn,
        )

    def _work(self, request: Request) -> None:
        """The worker thread: stream the answer into the widget, then record it. Never raises."""
        try:
            messages, user = request.messages()
            self._stream = self.backend.stream(messages, request.adapter, **request.options)
            if self._stop_requested.is_set():
                self._stream.stop()
            self._show_streamed(self._stream)
            answer = self._stream.answer
            self._finish(request, user, answer)
        except Exception as error:  # shown on the error line; the full error stays in last_error
            logger.debug("widget ask failed", exc_info=True)
            self.last_error = error
            self._show_error(describe_error(error))
            self.status.value = "Not answered (see the message below). Ready for another question."
        finally:
            self._stream = None
            self._set_busy(False)

    def _show_streamed(self, stream: Any) -> None:
        text, shown = "", 0.0
        for piece in stream:
            text += piece
            if time.monotonic() - shown >= UPDATE_INTERVAL_S:
                thinking, answer = split_thinking(text)
                self._show_answer(strip_box_tags(answer), thinking)
                shown = time.monotonic()

    def _finish(self, request: Request, user: dict[str, Any], answer: Answer) -> None:
        stopped = self._stop_requested.is_set()  # set only by stop() during this answer
        if stopped:
            answer = dataclasses.replace(answer, finish_reason="stopped")
        self.last_answer = answer
        self._show_answer(answer.text, answer.thinking, answer.boxed)
        self.timing.value = timing_line(answer)
        if answer.boxes:
            self.show_boxes(answer.boxes)
        if request.multi_turn:
            self.conversation = request.earlier + [user, {"role": "assistant", "content": answer.text}]
            self._images_sent = True
        adapter = request.adapter or "base model"
        self._history.add(
            request.question,
            answer,
            image_names=request.image_names,
            adapter=adapter,
            settings=request.options,
            multi_turn=request.multi_turn,
        )
        self.history_table.value = self._history.to_html()
        done = f"Stopped: kept {answer.usage.completion_tokens} tokens." if stopped else "Done."
        self.status.value = f"{done} Ready for another question."

    def _show_answer(self, text: str, thinking: str | None, boxed: list[str] | None = None) -> None:
        self._answer_text = text
        self.answer.value = (_text_html(text) if text else "") + _boxed_html(boxed or [])
        self.thinking_text.value = _text_html(thinking or "")
        title = f"Thinking 思考过程 ({len(thinking)} characters)" if thinking else "Thinking 思考过程 (none)"
        self.thinking_box.set_title(0, title)

    def _set_busy(self, busy: bool) -> None:
        self.ask_button.disabled = busy
        self.stop_button.disabled = not busy
        if busy:
            self._show_error("")
            self.status.value = "Generating… (Stop keeps what was generated)"
            self._show_answer("", None)
            self.timing.value = ""

    def _show_error(self, message: str) -> None:
        self.error.value = f'<span style="color:#b00020">⚠ {html.escape(message)}</span>' if message else ""

    # ---- controls ------------------------------------------------------------------------------

    def _on_preset(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.question.value = change["new"]
            self.presets.value = ""  # back to the placeholder, so the same preset can be picked again

    def _on_question_typed(self, change: dict[str, Any]) -> None:
        """ "Enter asks": a newline typed at the end of the question asks it (see the module docstring)."""
        if self.enter_asks.value and change["new"] == change["old"] + "\n":
            self.question.value = change["old"]
            self.ask()

    def refresh_adapters(self) -> None:
        """Reload the adapter list (adapters loaded on the VLM, or the server's models); keeps the choice."""
        try:
            options = self.backend.adapter_options()
        except Exception as error:  # a server that is down: say so, keep the old list
            self.last_error = error
            self._show_error(describe_error(error))
            return
        current = self.adapter.value
        self.adapter.options = options
        values = [value for _, value in options]
        default = self.backend.default_adapter()
        if current not in values and default not in values:  # e.g. Client(model=...) the server lacks
            self._show_error(f"{default!r} is not served here; using the base model.")
            default = BASE
        self.adapter.value = current if current in values else default

    # ---- history -------------------------------------------------------------------------------

    @property
    def history(self) -> pd.DataFrame:
        """Every question and answer of this widget's session, one row each (see `history.COLUMNS`)."""
        return self._history.frame()

    def export_history(self, path: str | Path | None = None) -> Path:
        """Write `history` as CSV to `path` (default: glmlab-history-<time>.csv here); returns the path."""
        path = path or f"glmlab-history-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        return self._history.to_csv(path)

    def _export_clicked(self) -> None:
        try:
            path = self.export_history()
        except OSError as error:
            self._show_error(f"The history could not be saved ({error}).")
            return
        self.status.value = f"History saved to {path.resolve()}"

    @property
    def answer_text(self) -> str:
        """The answer shown now (while streaming: what has arrived so far), as plain text."""
        return self._answer_text


def _boxed_html(values: list[str]) -> str:
    """The answer's boxed values (`Answer.boxed`, not grounding boxes) on a line of their own."""
    if not values:
        return ""
    shown = " · ".join(f"<code>{html.escape(value)}</code>" for value in values)
    return f'<div style="margin-top: 4px"><b>Boxed answer 框内答案:</b> {shown}</div>'


def _text_html(text: str) -> str:
    """Plain text as HTML that keeps its line breaks (model output is escaped, never rendered as markup)."""
    return f'<div style="white-space: pre-wrap; line-height: 1.4">{html.escape(text)}</div>'
