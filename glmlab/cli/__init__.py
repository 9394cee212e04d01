"""The `glmlab` command: one verb per capability, each a thin front over one library function.

Each verb lives in its own module here and registers itself on `app` (glmlab.cli.root); add a verb
by importing its module below.
"""

from __future__ import annotations

from glmlab.cli import (  # noqa: F401  (verbs register themselves on import)
    ask,
    demo,
    eval,
    export,
    serve,
    train,
)
from glmlab.cli.root import app

__all__ = ["app"]
