"""The official VQA answer normalisation (EvalAI / GT-Vision-Lab `vqaEval.py`), reimplemented.

VQAv2 scores only make sense against published numbers if answers are normalised exactly as the
official script does: punctuation stripped or turned into spaces depending on its surroundings,
number words turned into digits, articles dropped, apostrophe-less contractions restored. Written
by hand because the official code is a script, not an installable library. Its quirks are kept on
purpose, since they change scores:

- the period pattern `(?!<=\\d)(\\.)(?!\\d)` has a typo'd look-behind, so it removes every "." not
  followed by a digit, and `re.UNICODE` is passed where `count` goes, so at most 32 are removed;
- a punctuation mark is deleted (not spaced) when the text has a digit,digit comma anywhere;
- contractions are looked up after lowercasing, so the table's capitalised "Im"/"Ive" keys never
  match and are left out here; "somebody'd" maps to "somebodyd" as in the original table.
"""

from __future__ import annotations

import re

__all__ = ["normalize_vqa_answer"]

_PUNCTUATION = list(';/[]"{}()=+\\_-><@`,?!')  # the official list
_PERIOD_RE = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = 32  # the official script passes re.UNICODE (== 32) as re.sub's count
_DIGIT_COMMA_RE = re.compile(r"\d,\d")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = dict(
    pair.split("=")
    for pair in """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
    couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
    hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
    howd=how'd howll=how'll hows=how's isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll
    let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've
    mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've oclock=o'clock
    oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
    shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
    shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
    somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
    someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
    somethingd=something'd somethingd've=something'd've something'dve=something'd've
    somethingll=something'll thats=that's thered=there'd thered've=there'd've there'dve=there'd've
    therere=there're theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've
    theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've
    we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's
    whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd
    whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll
    whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
    wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
    y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've
    youll=you'll youre=you're youve=you've
    """.split()
)


def normalize_vqa_answer(answer: str) -> str:
    """An answer as the official VQA evaluation compares it: "Two dogs." -> "2 dogs"."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_and_articles(_punctuation(answer))


def _punctuation(text: str) -> str:
    """processPunctuation: delete a mark next to a space (or if a digit,digit comma exists), else space it."""
    digit_comma = _DIGIT_COMMA_RE.search(text) is not None
    result = text
    for mark in _PUNCTUATION:
        if digit_comma or f"{mark} " in text or f" {mark}" in text:
            result = result.replace(mark, "")
        else:
            result = result.replace(mark, " ")
    return _PERIOD_RE.sub("", result, count=_PERIOD_LIMIT)


def _digits_and_articles(text: str) -> str:
    """processDigitArticle: lowercase, number words to digits, drop articles, restore contractions."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)
