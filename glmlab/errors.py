"""glmlab's one small exception hierarchy.

Every message names the input, what was wrong with it, and what to do about it, so a user never has
to read a traceback to know their next step.
"""

from __future__ import annotations


class GlmlabError(Exception):
    """Base class: catch this to handle every error glmlab raises on purpose."""


class InputError(GlmlabError, ValueError):
    """An image, message or data row that glmlab cannot use."""


class ConfigError(GlmlabError, ValueError):
    """A recipe, suite or setting with a bad field; the message names the field."""


class ModelLoadError(GlmlabError, RuntimeError):
    """A model, processor or adapter that could not be loaded."""


class AdapterError(GlmlabError, ValueError):
    """A LoRA adapter that is missing, malformed or unknown by name."""


class BusyError(GlmlabError, RuntimeError):
    """A shared resource (the decode memory budget) is in use for now; the same call can succeed later."""
