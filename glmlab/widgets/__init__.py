"""glmlab's notebook widgets, built from standard ipywidgets 8 (no custom front end to install).

    import glmlab
    from glmlab.widgets import VQAWidget
    VQAWidget(glmlab.load("tiny"))        # or a glmlab.Client(...) of a server

`VQAWidget` asks a model about uploaded images with streamed answers, thinking apart, grounding boxes on
the preview, a Stop button, per-answer timing, adapter switching and an exportable history.
`random_adapter` writes a LoRA adapter with random weights, to show adapter switching without training.
"""

from __future__ import annotations

from glmlab.adapters.random import random_adapter
from glmlab.widgets.history import COLUMNS as HISTORY_COLUMNS
from glmlab.widgets.presets import PRESETS
from glmlab.widgets.vqa import VQAWidget

__all__ = ["HISTORY_COLUMNS", "PRESETS", "VQAWidget", "random_adapter"]
