"""Tool (function) calls: OpenAI's `tools` and `tool_choice` for GLM-V, both ways.

The checkpoint's chat template renders the tools and earlier calls and results. The model writes a
call as GLM-4.5/4.6 do (the format vLLM's glm45 tool parser reads):

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

`parse_tool_calls` turns that into OpenAI `tool_calls` (an argument is a string when its parameter is
a string, else the JSON it reads as). `tool_choice="required"` or a named function constrains decoding
instead, as vLLM does, to JSON `{"name": ..., "arguments": {...}}` fitting the function's parameters
(glmlab.structured), so a forced call is valid even from a model that never learnt the format.
Hand-written: no library parses GLM's call format outside vLLM.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from glmlab.errors import InputError

CALL = re.compile(
    r"<tool_call>\s*(?P<name>[^\n<]+?)\s*(?:\n|(?=<arg_key>)|(?=</tool_call>))(?P<body>.*?)</tool_call>", re.S
)
ARGUMENT = re.compile(r"<arg_key>(?P<key>.*?)</arg_key>\s*<arg_value>(?P<value>.*?)</arg_value>", re.S)
CHOICES = ("auto", "none", "required")


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI function tools, each {"type": "function", "function": {"name", "description"?,
    "parameters"?}}; an InputError names the first bad one."""
    if not isinstance(tools, list) or not tools:
        raise InputError("tools: expected a non-empty list of {'type': 'function', 'function': {...}}.")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise InputError(
                f"tools[{index}]: expected {{'type': 'function', 'function': {{'name', 'parameters'}}}}."
            )
        name = function.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise InputError(
                f"tools[{index}].function.name: 1-64 letters, digits, '_', '.' or '-', got {name!r}."
            )
        if not isinstance(function.get("parameters", {}), dict):
            raise InputError(f"tools[{index}].function.parameters: expected a JSON schema object.")
    return tools


def check_choice(choice: Any, tools: list[dict[str, Any]] | None) -> Any:
    """'auto', 'none', 'required' or {"type": "function", "function": {"name"}} naming one of `tools`."""
    if choice is None or choice in CHOICES:
        return choice
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if name is None:
        raise InputError(f"tool_choice={choice!r:.80}: expected auto, none, required or a named function.")
    if name not in [tool["function"]["name"] for tool in tools or []]:
        raise InputError(f"tool_choice names {name!r}, which is not one of the tools.")
    return choice


def template_tools(tools: list[dict[str, Any]] | None, choice: Any) -> list[dict[str, Any]] | None:
    """The tools the prompt lists (none with tool_choice='none'; only the named one when forced)."""
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return [tool for tool in tools if tool["function"]["name"] == choice["function"]["name"]]
    return tools


def forced_call_schema(tools: list[dict[str, Any]] | None, choice: Any) -> dict[str, Any] | None:
    """The JSON schema a forced call (required / a named function) is decoded under; None otherwise."""
    if not tools or choice in (None, "auto", "none"):
        return None
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["function"]["name"]},
                "arguments": tool["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in template_tools(tools, choice) or []
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def new_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI tool call (arguments as a JSON string, as OpenAI sends them)."""
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def parse_tool_calls(
    text: str, tools: list[dict[str, Any]] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(the text outside the calls, the calls) of an answer in GLM's format; see the module docstring."""
    calls = []
    for match in CALL.finditer(text):
        name = match.group("name").strip()
        types = _parameter_types(tools, name)
        arguments = {
            argument.group("key").strip(): _value(
                argument.group("value"), types.get(argument.group("key").strip())
            )
            for argument in ARGUMENT.finditer(match.group("body"))
        }
        calls.append(new_call(name, arguments))
    return CALL.sub("", text).strip(), calls


def _parameter_types(tools: list[dict[str, Any]] | None, name: str) -> dict[str, Any]:
    for tool in tools or []:
        if tool["function"]["name"] == name:
            properties = (tool["function"].get("parameters") or {}).get("properties") or {}
            return {key: spec.get("type") for key, spec in properties.items() if isinstance(spec, dict)}
    return {}


def _value(raw: str, declared: Any) -> Any:
    """A string parameter's value as written; any other the JSON it reads as (else the text)."""
    if declared == "string":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
