"""The "GLM Visual QA" node: a question about every image of a ComfyUI IMAGE batch, asked of a server.

It talks to an OpenAI-compatible GLM-V server (`glmlab serve`, or vLLM) through `glmlab.Client`, so
ComfyUI's process never loads the model and the node gets the client's timeout and retries. One
answer per image: the output is a ComfyUI list (OUTPUT_IS_LIST), so downstream nodes run once per
answer. A failure raises (ComfyUI shows it on the node) instead of sending a string such as
"Error: 500" downstream as if it were an answer, unless the workflow asks for a friendly message.

Deployment advice for a public service: a fallback model or endpoint, a friendly message when a call
fails, and a clear timeout. So a failed call (no connection, a 5xx, 429 or 404, no first token in
time) goes to the fallback (fallback_url and/or fallback_model), by `Client`'s own failover; if that
fails too, the node raises or, with on_failure="message", answers that image with failure_message (the
error goes to the log). timeout_s is each server's share of the call's deadline, so one answer takes
at most timeout_s per server, reads and retries included.

The API key is never a node input (ComfyUI saves inputs into workflow JSON and PNG metadata, which
people share): it comes from the GLMLAB_API_KEY environment variable, and goes only to a server on
loopback or on a host named in GLMLAB_TRUSTED_HOSTS, so a shared workflow's server_url cannot
collect it. https servers' certificates are checked (`glmlab.Client`), against GLMLAB_CA_BUNDLE when
set (a private CA), else the system's.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import httpx

from glmlab.client import NO_API_KEY, Client, Endpoint, ServerError, normalise_base_url
from glmlab.images import to_pil
from glmlab.urls import is_loopback_host

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:8080/v1"
ON_FAILURE = ("raise", "message")  # fail the workflow (default) or answer with failure_message
DEFAULT_FAILURE_MESSAGE = "(No answer: the vision model's server could not be reached. Try again later.)"
API_KEY_ENV = "GLMLAB_API_KEY"
CA_BUNDLE_ENV = "GLMLAB_CA_BUNDLE"  # a private CA's certificates (PEM) for https servers
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
        client = node_client(server_url, model, timeout_s, fallback_url.strip(), fallback_model.strip())
        options = {"thinking": thinking, "max_new_tokens": max_tokens, "temperature": temperature}
        answers = []
        for picture in to_pil(image):
            try:
                answers.append(client.ask(picture, prompt, **options).text)
            except ServerError as error:
                if on_failure == "raise":
                    raise explain_401(error) from None
                logger.warning("GLM Visual QA answered with its failure message: %s", error)
                answers.append(failure_message)
        return (answers,)


def node_client(
    server_url: str, model: str, timeout_s: float, fallback_url: str, fallback_model: str
) -> Client:
    """A Client of server_url, failing over to the fallback (when one is set), each server given
    timeout_s for its answer: the call's deadline is timeout_s per server. Each server gets the key
    only by the loopback / trusted-host rule."""
    fallbacks = []
    if fallback_url or fallback_model:
        url = fallback_url or server_url
        fallbacks.append(Endpoint(url, fallback_model or model or None, api_key_for(url) or NO_API_KEY))
    return Client(
        server_url,
        api_key=api_key_for(server_url) or NO_API_KEY,
        model=model or None,
        timeout=timeout_s,
        fallbacks=fallbacks,
        deadline=timeout_s * (1 + len(fallbacks)),
        ca_bundle=os.environ.get(CA_BUNDLE_ENV) or None,  # https servers' certificates are always checked
    )


def explain_401(error: ServerError) -> ServerError:
    """A 401 from a host the key was withheld from says how to trust that host."""
    if error.status != 401 or not os.environ.get(API_KEY_ENV) or api_key_for(error.url) is not None:
        return error
    host = httpx.URL(error.url).host
    return ServerError(
        f"{error} The node sends {API_KEY_ENV} only to servers on loopback and on hosts listed "
        f"in {TRUSTED_HOSTS_ENV}; add {host} there if you trust it.",
        url=error.url,
        status=error.status,
        server_message=error.server_message,
        code=error.code,
    )
