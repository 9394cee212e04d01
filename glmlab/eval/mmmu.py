"""MMMU answer parsing and judging, ported from the MMMU authors' `eval_utils.py` as lmms-eval runs it.

`parse_choice` (their `parse_multi_choice_response`) and `parse_open` (`parse_open_response`) keep the
reference's quirks, since they change scores: the response is stripped of edge punctuation and padded
with spaces, "(B)" outranks "B " outranks "B.", a long answer may name an option by its text, the
sentence split runs after lowercasing (so it splits on newlines only), and numbers are rounded to
two decimals. One difference, on purpose: where the reference guesses a random letter for an answer
that names none, glmlab draws it from a generator seeded by the answer and the options, so a saved
run rescores to the same number (the expected score is the reference's).

Written by hand because the reference is a script inside an evaluation harness, not a library.
"""

from __future__ import annotations

import ast
import random
import re
import zlib
from typing import Any

__all__ = ["judge", "option_list", "parse_choice", "parse_open"]

_EDGE_PUNCTUATION = [",", ".", "!", "?", ";", ":", "'"]
_INDICATORS = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
_NUMBER_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUMBER_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUMBER_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def option_list(options: Any) -> list[str]:
    """The options of a question: a list, or the hub's string of a Python list ("['$6', '$7']")."""
    return list(ast.literal_eval(options)) if isinstance(options, str) else list(options)


def judge(response: str, answer: str, question_type: str, options: Any) -> bool:
    """Whether `response` answers correctly: the parsed letter equals the answer (multiple choice), or a
    parsed piece matches the normalised answer (open: a number equal after rounding, or the answer
    text inside a parsed string)."""
    if question_type == "multiple-choice":
        return parse_choice(response, option_list(options)) == answer
    return _open_correct(answer, parse_open(response))


def parse_choice(response: str, options: list[str]) -> str:
    """The option letter a response chooses, as the reference parses it (a seeded guess if none)."""
    letters = [chr(ord("A") + k) for k in range(len(options))]
    for char in _EDGE_PUNCTUATION:
        response = response.strip(char)
    response = f" {response} "
    by_letter, bracketed = True, False
    candidates = [letter for letter in letters if f"({letter})" in response]
    bracketed = bool(candidates)
    for pattern in ("{} ", "{}."):
        if not candidates:
            candidates = [letter for letter in letters if pattern.format(letter) in response]
    if not candidates and len(response.split()) > 5:
        candidates = [
            letter for letter, text in zip(letters, options, strict=True) if text.lower() in response.lower()
        ]
        by_letter = not candidates
    if not candidates:
        seed = zlib.crc32(f"{response}\x00{options}".encode())
        return random.Random(seed).choice(letters)
    if len(candidates) == 1:
        return candidates[0]
    if not by_letter:
        starts = [response.lower().rfind(options[letters.index(c)].lower()) for c in candidates]
    elif bracketed:
        starts = [response.rfind(f"({c})") for c in candidates]
    else:
        starts = [response.rfind(f" {c} ") for c in candidates]
    return candidates[starts.index(max(starts))]  # the last-mentioned; ties go to the first, as argmax


def parse_open(response: str) -> list[str | float]:
    """The pieces of an open answer that may hold it: key phrases, the numbers in them, normalised."""
    pieces = _key_phrases(response)
    pieces += [number for phrase in list(pieces) for number in _numbers(phrase)]
    return list({value: None for piece in pieces for value in _normalise(piece)})


def _key_phrases(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = list(_INDICATORS)
    found = []
    for index, sentence in enumerate(sentences):
        if index == len(sentences) - 1:
            indicators.append("=")
        shortest = None
        for indicator in indicators:
            if indicator in sentence:
                tail = sentence.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _EDGE_PUNCTUATION:
            found.append(shortest)
    return found or [response]


def _numbers(text: str) -> list[str]:
    return [*_NUMBER_COMMAS.findall(text), *_NUMBER_SCIENTIFIC.findall(text), *_NUMBER_SIMPLE.findall(text)]


def _normalise(text: str) -> list[str | float]:
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        text = text.lower()
        return [" " + text, text + " "] if len(text) == 1 else [text]


def _open_correct(answer: str, pieces: list[str | float]) -> bool:
    expected = _normalise(answer)
    for piece in pieces:
        if isinstance(piece, str):
            if any(isinstance(value, str) and value in piece for value in expected):
                return True
        elif piece in expected:
            return True
    return False
