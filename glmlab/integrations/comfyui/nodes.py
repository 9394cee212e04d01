"""The "GLM Visual QA" node: a question about every image of a ComfyUI IMAGE batch, asked of a server.

It talks to an OpenAI-compatible GLM-V server (`glmlab serve`, or vLLM) through `glmlab.Client`, so
ComfyUI's process never loads the model and the node gets the client's timeout and retries. One
answer per image: the output is a ComfyUI list (OUTPUT_IS_LIST), so downstream nodes run once per
answer. A failure raises (ComfyUI shows it on the node) instead of sending a string such as
"Error: 500" downstream as if it were an answer, unless the workflow asks for a friendly message.

Deployment advice for a public service: a fallback model or endpoint, a friendly message when a call
fails, and a clear timeout. So a failed call (no connection, an error status, no answer in time) is
asked again of the fallback (fallback_url and/or fallback_model); if that fails too, the node raises
or, with on_failure="message", answers that image with failure_message (the error goes to the log).
timeout_s bounds one answer from one server as a whole, not each read of it.

The API key is never a node input (ComfyUI saves inputs into workflow JSON and PNG metadata, which
people share): it comes from the GLMLAB_API_KEY environment variable, and goes only to a server on
loopback or on a host named in GLMLAB_TRUSTED_HOSTS, so a shared workflow's server_url cannot
collect it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import httpx

from glmlab.client import NO_API_KEY, Client, ServerError, normalise_base_url
from glmlab.images import to_pil
from glmlab.urls import is_loopback_host

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:8080/v1"
ON_FAILURE = ("raise", "message")  # fail the workflow (default) or answer with failure_message
DEFAULT_FAILURE_MESSAGE = "(No answer: the vision model's server could not be reached. Try again later.)"
API_KEY_ENV = "GLMLAB_API_KEY"
TRUSTED_HOSTS_ENV = "GLMLAB_TRUSTED_HOSTS"  # comma-separated host names the key may be sent to


def trusted_hosts() -> set[str]:
    """The host names in GLMLAB_TRUSTED_HOSTS (commas or spaces between them), lowercased."""
    return {
        name.strip("[]").lower()
        for name in re.split(r"[,\s]+", os.environ.get(TRUSTED_HOSTS_ENV, ""))
        if name
    }


def api_key_for(server_url: str) -> str | None:
    """GLMLAB_API_KEY when `server_url` is on loopback or a trusted host; None (send no key) otherwise."""
    key = os.environ.get(API_KEY_ENV)
    host = httpx.URL(normalise_base_url(server_url)).host.lower()  # as the client will connect
    if key and (is_loopback_host(host) or host in trusted_hosts()):
        return key
    return None


class GLMVisualQA:
    """ComfyUI node: IMAGE [B,H,W,C] + prompt -> B answers (STRING list)."""

    CATEGORY = "glmlab"
    DESCRIPTION = "Ask a GLM-V vision-language model (glmlab serve or vLLM) a question about each image."
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("answers",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "answer"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return {
            "required": {
                "image": ("IMAGE",),
                "prompt": ("STRING", {"multiline": True, "default": "Describe the image."}),
                "server_url": ("STRING", {"default": DEFAULT_URL}),
                "model": (
                    "STRING",
                    {"default": "", "tooltip": "Model or adapter name; empty: the server's base model."},
                ),
                "max_tokens": ("INT", {"default": 512, "min": 1, "max": 16384}),
                "temperature": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "0: greedy (the same answer every run).",
                    },
                ),
                "timeout_s": ("FLOAT", {"default": 120.0, "min": 1.0, "max": 3600.0, "step": 1.0}),
                "thinking": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Let the model think before answering."},
                ),
            },
            # optional, so workflows saved before these inputs existed still load
            "optional": {
                "fallback_url": (
                    "STRING",
                    {"default": "", "tooltip": "Asked when server_url fails; empty: server_url again."},
                ),
                "fallback_model": (
                    "STRING",
                    {"default": "", "tooltip": "Model for the fallback call; empty: the same model."},
                ),
                "on_failure": (list(ON_FAILURE), {"default": "raise"}),
                "failure_message": ("STRING", {"default": DEFAULT_FAILURE_MESSAGE, "multiline": True}),
            },
        }

    def answer(
        self,
        image: Any,
        prompt: str,
        server_url: str,
        model: str,
        max_tokens: int,
        temperature: float,
        timeout_s: float,
        thinking: bool,
        fallback_url: str = "",
        fallback_model: str = "",
        on_failure: str = "raise",
        failure_message: str = DEFAULT_FAILURE_MESSAGE,
    ) -> tuple[list[str]]:
        """One answer per image of the batch, in order.

        Raises glmlab's ServerError (after the fallback, if any) or InputError; with
        on_failure="message", a server failure answers that image with failure_message instead.
        """
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure={on_failure!r}: use one of {', '.join(ON_FAILURE)}.")
        has_fallback = bool(fallback_url.strip() or fallback_model.strip())
        # With a fallback, fail over at once instead of retrying the failed server first.
        targets = [Target(server_url, model, timeout_s, retries=0 if has_fallback else 2)]
        if has_fallback:
            targets.append(
                Target(fallback_url.strip() or server_url, fallback_model.strip() or model, timeout_s)
            )
        options = {"thinking": thinking, "max_new_tokens": max_tokens, "temperature": temperature}
        answers = []
        for picture in to_pil(image):
            try:
                answers.append(first_answer(targets, picture, prompt, options))
            except ServerError as error:
                if on_failure == "raise":
                    raise
                logger.warning("GLM Visual QA answered with its failure message: %s", error)
                answers.append(failure_message)
        return (answers,)


class Target:
    """One server and model the node may ask, with the node's key rule and whole-answer timeout."""

    def __init__(self, url: str, model: str, timeout_s: float, retries: int = 2) -> None:
        self.key = api_key_for(url)
        self.timeout_s = timeout_s
        self.client = Client(
            url, api_key=self.key or NO_API_KEY, model=model or None, timeout=timeout_s, retries=retries
        )

    def ask(self, picture: Any, prompt: str, options: dict[str, Any]) -> str:
        """The answer text; ServerError when it fails or is not complete within timeout_s."""
        deadline = time.monotonic() + self.timeout_s
        try:
            stream = self.client.stream(picture, prompt, **options)
            pieces = iter(stream)
            for _ in pieces:  # each read also times out after timeout_s (the client's timeout)
                if time.monotonic() > deadline:
                    pieces.close()  # hangs up: the server stops generating
                    url = self.client.base_url
                    raise ServerError(
                        f"{url}: no full answer within {self.timeout_s:g} s; raise the node's timeout_s "
                        "or ask for fewer tokens (max_tokens).",
                        url=url,
                    )
            return stream.answer.text
        except ServerError as error:
            raise self.explain(error) from None

    def explain(self, error: ServerError) -> ServerError:
        """A 401 from a host the key was withheld from says how to trust that host."""
        if error.status != 401 or self.key is not None or not os.environ.get(API_KEY_ENV):
            return error
        host = httpx.URL(self.client.base_url).host
        return ServerError(
            f"{error} The node sends {API_KEY_ENV} only to servers on loopback and on hosts listed "
            f"in {TRUSTED_HOSTS_ENV}; add {host} there if you trust it.",
            url=error.url,
            status=error.status,
            server_message=error.server_message,
            code=error.code,
        )


def first_answer(targets: list[Target], picture: Any, prompt: str, options: dict[str, Any]) -> str:
    """The first target's answer that comes; the last one's error (naming the earlier) if none does."""
    failures: list[str] = []
    for target in targets:
        try:
            return target.ask(picture, prompt, options)
        except ServerError as error:
            if target is targets[-1]:
                if not failures:
                    raise
                raise ServerError(
                    f"{error} (Before that: {'; '.join(failures)})",
                    url=error.url,
                    status=error.status,
                    server_message=error.server_message,
                    code=error.code,
                ) from None
            logger.warning("GLM Visual QA: %s; asking the fallback", error)
            failures.append(str(error))
    raise AssertionError("no targets")  # unreachable: answer() always passes at least one
