"""What every engine check script shares: read its request, print its verdict as the last line."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable


class CheckFailed(Exception):
    """The engine disagreed with glmlab; the message is the verdict's reason."""


def main(check: Callable[[dict], str]) -> None:
    """Run `check(request)`; print {"ok": true, "reason": <its summary>} or {"ok": false, "reason": ...}."""
    request = json.loads(open(sys.argv[1], encoding="utf-8").read())
    try:
        summary = check(request)
        verdict = {"ok": True, "reason": summary}
    except CheckFailed as failure:
        verdict = {"ok": False, "reason": str(failure)}
    except Exception as error:  # the engine's own crash is the verdict, with its traceback in the log
        traceback.print_exc()
        verdict = {"ok": False, "reason": f"{type(error).__name__}: {error}"}
    sys.stdout.flush()
    print("\n" + json.dumps(verdict), flush=True)
