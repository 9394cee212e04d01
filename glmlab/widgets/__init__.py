"""glmlab's notebook widgets, built from standard ipywidgets 8 (no custom front end to install).

    import glmlab
    from glmlab.widgets import VQAWidget
    VQAWidget(glmlab.load("tiny"))        # or a glmlab.Client(...) of a server

`VQAWidget` asks a model about uploaded images with streamed answers, thinking apart, grounding boxes on
the preview, a Stop button, per-answer timing, adapter switching and an exportable history.
`ClassroomWidget` asks about a gallery of pictures for a teacher: the same question to every picture
(or one per picture), classroom presets, a progress bar, the answers in a table exported as CSV or as a
web page with thumbnails.
`random_adapter` writes a LoRA adapter with random weights, to show adapter switching without training.
"""

from __future__ import annotations

from glmlab.adapters.random import random_adapter
from glmlab.widgets.answer_sheet import COLUMNS as ANSWER_COLUMNS
from glmlab.widgets.classroom import PER_PICTURE, SAME, ClassroomWidget
from glmlab.widgets.history import COLUMNS as HISTORY_COLUMNS
from glmlab.widgets.presets import CLASSROOM_PRESETS, PRESETS
from glmlab.widgets.vqa import VQAWidget

__all__ = [
    "ANSWER_COLUMNS",
    "CLASSROOM_PRESETS",
    "HISTORY_COLUMNS",
    "PER_PICTURE",
    "PRESETS",
    "SAME",
    "ClassroomWidget",
    "VQAWidget",
    "random_adapter",
]
