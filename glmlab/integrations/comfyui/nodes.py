"""The "GLM Visual QA" node: a question about every image of a ComfyUI IMAGE batch, asked of a server.

It talks to an OpenAI-compatible GLM-V server (`glmlab serve`, or vLLM) through `glmlab.Client`, so
ComfyUI's process never loads the model and the node gets the client's timeout and retries. One
answer per image: the output is a ComfyUI list (OUTPUT_IS_LIST), so downstream nodes run once per
answer. A failure raises (ComfyUI shows it on the node) instead of sending a string such as
"Error: 500" downstream as if it were an answer.

The API key is never a node input (ComfyUI saves inputs into workflow JSON and PNG metadata, which
people share): it comes from the GLMLAB_API_KEY environment variable, and goes only to a server on
loopback or on a host named in GLMLAB_TRUSTED_HOSTS, so a shared workflow's server_url cannot
collect it.
"""

from __future__ import annotations

import os
import re
from typing import Any

import httpx

from glmlab.client import NO_API_KEY, Client, ServerError, normalise_base_url
from glmlab.images import to_pil
from glmlab.urls import is_loopback_host

DEFAULT_URL = "http://localhost:8080/v1"
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
    ) -> tuple[list[str]]:
        """One answer per image of the batch, in order. Raises glmlab's ServerError/InputError on failure."""
        key = api_key_for(server_url)
        client = Client(server_url, api_key=key or NO_API_KEY, model=model or None, timeout=timeout_s)
        try:
            answers = [
                client.ask(
                    picture, prompt, thinking=thinking, max_new_tokens=max_tokens, temperature=temperature
                ).text
                for picture in to_pil(image)
            ]
        except ServerError as error:
            if error.status != 401 or key is not None or not os.environ.get(API_KEY_ENV):
                raise
            host = httpx.URL(client.base_url).host
            raise ServerError(
                f"{error} The node sends {API_KEY_ENV} only to servers on loopback and on hosts listed "
                f"in {TRUSTED_HOSTS_ENV}; add {host} there if you trust it.",
                url=error.url,
                status=error.status,
                server_message=error.server_message,
                code=error.code,
            ) from None
        return (answers,)
