"""Answer extraction: the part of a model's answer that a metric scores.

A GLM-V answer is prose around the thing being asked for: `<think>` reasoning, then "The total is
¥1,234.50." or "Answer: (C)" or a ```json fence. Each extractor takes the raw generated text (or the
already-split final text; both work) and returns the scored part, or None when the answer holds no
such part, so a metric can count it as wrong instead of crashing. Every extractor first drops the
thinking (via `glmlab.answer.split_thinking`, so a truncated `<think>` with no close leaves an empty
answer) and the grounding-box tags.

Extractors are registered by name in `EXTRACTORS` so an eval suite can name them in YAML:
`text`, `json`, `number`, `yes_no`, `choice`, `box`. A user adds one by assigning into the dict.

The pattern matching below is written by hand: no library extracts answers from free-form
Chinese/English model prose. JSON objects are found by `glmlab.answer.parse_json_object`
(`json`, with `json5` as a safe fallback for trailing commas and single quotes).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from glmlab.answer import parse_boxes, parse_json_object, split_thinking, strip_box_tags
from glmlab.errors import ConfigError
from glmlab.eval.numbers import NumberRules, parse_number

__all__ = [
    "EXTRACTORS",
    "extract_box",
    "extract_choice",
    "extract_json",
    "extract_number",
    "extract_text",
    "extract_yes_no",
    "final_text",
    "get_extractor",
]

# A number not glued to a preceding letter or digit ("COVID-19" is 19, not -19), with optional
# thousands separators, decimals, and a trailing percent sign or Chinese magnitude (万 = 1e4, 亿 = 1e8).
_FREE_TEXT = NumberRules(find=True, magnitudes=True)  # units ignored, "45%" is 45, 万/亿 multiply
_PREFIX_RE = re.compile(
    r"^\s*(?:\*\*)?\s*(?:(?:final\s+)?answer|答案|回答|答)\s*(?:is|是|为)?\s*(?:\*\*)?\s*[:：]?\s*",
    re.IGNORECASE,
)
_LEADING_NOISE_RE = re.compile(r"^[\s*_`\"'“”‘’()\[\]【】「」]+")
_YES_NO_START = [
    (re.compile(r"^(?:yes|true|correct)\b", re.IGNORECASE), "yes"),
    (re.compile(r"^(?:no|false|incorrect)\b", re.IGNORECASE), "no"),
    # Negations before affirmations: "没有" contains "有", "不是" contains "是". "无法" is "cannot".
    (re.compile(r"^(?:没有|不是|不存在|不对|否|无(?!法))"), "no"),
    (re.compile(r"^(?:是|有|存在|对)"), "yes"),
]
_YES_NO_ANYWHERE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_CHOICE_AFTER = r"\s*(?i:is|是|为|应为|应该是)?\s*[:：]?[\s*]*[(\[]?([A-E])(?![A-Za-z])"
# "answer" outranks "option": in "Option A is wrong, the answer is B" the answer is B.
_CHOICE_ANSWER = re.compile(r"(?:(?i:answer)|答案)" + _CHOICE_AFTER)
_CHOICE_OPTION = re.compile(r"(?:(?i:option|choice)|选项|选择|选)" + _CHOICE_AFTER)
_CHOICE_BRACKETED = re.compile(r"[(\[]([A-E])[)\]]")
_CHOICE_LEADING = re.compile(r"^([A-E])(?:[.:)、,，]|$)")
# A bare capital letter; "A" followed by a lowercase word is the English article, not a choice.
# lmms-eval's refcoco `parse_float_sequence_within`: four numbers in square brackets.
_FOUR_NUMBERS = re.compile(
    r"\[\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?)\s*\]"
)
_CHOICE_BARE = re.compile(r"(?<![A-Za-z])(?!A\s+[a-z])([A-E])(?![A-Za-z])")


def final_text(text: str) -> str:
    """The final answer of `text`: thinking dropped, `<answer>` unwrapped, box tags removed, stripped.

    A generation cut off inside `<think>` has no answer yet, so this returns "".
    """
    return strip_box_tags(split_thinking(text)[1]).strip()


def extract_text(text: str) -> str:
    """The final answer as it is (the identity extractor, after thinking is dropped)."""
    return final_text(text)


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in the final answer (`glmlab.answer.parse_json_object`: ```json fences
    first, strict JSON then json5); None if none parses."""
    return parse_json_object(final_text(text))


def extract_number(text: str) -> float | None:
    """The first number in the answer as a float, or None.

    Full-width digits are read (NFKC), "1,234.5" is 1234.5 (commas group thousands; "1,23" is
    1), "-3" and "−3" are negative, "45%" is 45.0 (the percent sign is dropped, not divided
    by 100, matching how chart answers are written), units such as 元, kg or 个 are ignored, and the
    Chinese magnitudes 万 and 亿 multiply: "3.5万元" is 35000.0.
    """
    value = parse_number(final_text(text), _FREE_TEXT)
    return None if value is None else float(value)


def extract_yes_no(text: str) -> str | None:
    """ "yes", "no" or None, from an English or Chinese answer.

    The answer's opening word decides ("Yes, there is..." / "是的" / "有" / "没有" / "否" / "不是"),
    after an "Answer:" / "答案：" prefix and markdown emphasis are skipped. If it opens with neither,
    the first standalone English "yes" or "no" anywhere decides; Chinese is not searched mid-sentence
    because 是 and 有 occur in almost every sentence.
    """
    answer = _strip_answer_prefix(unicodedata.normalize("NFKC", final_text(text)))
    for pattern, verdict in _YES_NO_START:
        if pattern.match(answer):
            return verdict
    found = _YES_NO_ANYWHERE.search(answer)
    return found.group(1).lower() if found else None


def extract_choice(text: str) -> str | None:
    """The chosen option letter (A-E) or None.

    In order of trust: a marked choice ("Answer: C", "答案是B", "选C", "option (D)"), a bracketed
    letter ("(B)", "[B]"), a letter opening the answer ("B. Pneumonia", "C"), then the first bare
    capital A-E that is not the article "A". Full-width letters and brackets are read (NFKC).
    """
    answer = _strip_answer_prefix(unicodedata.normalize("NFKC", final_text(text)))
    for pattern in (_CHOICE_ANSWER, _CHOICE_OPTION, _CHOICE_BRACKETED, _CHOICE_LEADING, _CHOICE_BARE):
        found = pattern.search(answer)
        if found:
            return found.group(1)
    return None


def extract_box(text: str) -> list[float] | None:
    """The first grounding box [x1, y1, x2, y2] of the answer, or None.

    A box inside GLM's box tags first (`glmlab.answer.parse_boxes`: four numbers in 0-1000), else the
    first four bracketed numbers anywhere in the answer (lmms-eval's RefCOCO parsing), as written.
    """
    answer = split_thinking(text)[1]
    boxes = parse_boxes(answer)
    if boxes:
        return [float(value) for value in boxes[0]]
    found = _FOUR_NUMBERS.search(answer)
    return [float(value) for value in found.groups()] if found else None


def _strip_answer_prefix(answer: str) -> str:
    """Drop markdown emphasis, quotes, and an "Answer:"-style prefix, so the answer's first word leads."""
    answer = _LEADING_NOISE_RE.sub("", answer)
    stripped = _PREFIX_RE.sub("", answer, count=1)
    return _LEADING_NOISE_RE.sub("", stripped) if stripped != answer else answer


EXTRACTORS: dict[str, Callable[[str], Any]] = {
    "text": extract_text,
    "json": extract_json,
    "number": extract_number,
    "yes_no": extract_yes_no,
    "choice": extract_choice,
    "box": extract_box,
}


def get_extractor(name: str) -> Callable[[str], Any]:
    """The extractor registered as `name`; ConfigError naming the known ones if there is none."""
    try:
        return EXTRACTORS[name]
    except KeyError:
        known = ", ".join(sorted(EXTRACTORS))
        raise ConfigError(
            f"extractor {name!r}: unknown extractor. Known extractors: {known}. "
            "Use one of these, or add yours to glmlab.eval.extract.EXTRACTORS."
        ) from None
