"""The "GLM Visual QA" node: a question about every image of a ComfyUI IMAGE batch, asked of a server.

It talks to an OpenAI-compatible GLM-V server (`glmlab serve`, or vLLM) through `glmlab.Client`, so
ComfyUI's process never loads the model and the node gets the client's timeout and retries. One
answer per image: the output is a ComfyUI list (OUTPUT_IS_LIST), so downstream nodes run once per
answer. A failure raises (ComfyUI shows it on the node) instead of sending a string such as
"Error: 500" downstream as if it were an answer.
"""

from __future__ import annotations

from typing import Any

from glmlab.client import Client
from glmlab.images import to_pil

DEFAULT_URL = "http://localhost:8080/v1"


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
            "optional": {
                "api_key": ("STRING", {"default": "", "tooltip": "The server's key, if it has one."})
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
        api_key: str = "",
    ) -> tuple[list[str]]:
        """One answer per image of the batch, in order. Raises glmlab's ServerError/InputError on failure."""
        client = Client(server_url, api_key=api_key or None, model=model or None, timeout=timeout_s)
        answers = [
            client.ask(
                picture, prompt, thinking=thinking, max_new_tokens=max_tokens, temperature=temperature
            ).text
            for picture in to_pil(image)
        ]
        return (answers,)
