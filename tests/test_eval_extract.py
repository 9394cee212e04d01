"""Answer extraction: what part of a GLM-V answer each metric gets to see."""

from __future__ import annotations

import pytest

from glmlab.errors import ConfigError
from glmlab.eval.extract import (
    EXTRACTORS,
    extract_choice,
    extract_json,
    extract_number,
    extract_text,
    extract_yes_no,
    final_text,
    get_extractor,
)

# --- thinking and tags -------------------------------------------------------------------------


def test_final_text_drops_closed_thinking():
    assert final_text("<think>It is the capital.</think>\nParis") == "Paris"


def test_final_text_drops_stray_closing_think_tag():
    assert final_text("the prompt opened the tag</think> Paris ") == "Paris"


def test_final_text_of_truncated_think_is_empty():
    assert final_text("<think>still weighing A against B when cut") == ""


def test_final_text_removes_box_tags():
    assert final_text("<think>x</think><|begin_of_box|>B<|end_of_box|>") == "B"


def test_final_text_keeps_a_boxed_date_and_a_box_as_text():
    raw = "<|begin_of_box|>2024-03-17<|end_of_box|> at <|begin_of_box|>[1,2,3,4]<|end_of_box|>"
    assert final_text(raw) == "2024-03-17 at [1,2,3,4]"


def test_extract_text_is_identity_without_thinking():
    assert extract_text("  Hello  world ") == "Hello  world"


def test_extract_text_strips_thinking():
    assert extract_text("<think>hmm</think>Hello") == "Hello"


# --- JSON ----------------------------------------------------------------------------------------


def test_extract_json_reads_plain_object():
    assert extract_json('The fields are {"total": "12.50", "date": "2024-03-05"}.') == {
        "total": "12.50",
        "date": "2024-03-05",
    }


def test_extract_json_reads_json_fence():
    assert extract_json('Here you go:\n```json\n{"a": 1}\n```\nDone.') == {"a": 1}


def test_extract_json_prefers_fence_over_earlier_braces():
    assert extract_json('Format {like this}.\n```json\n{"a": 1}\n```') == {"a": 1}


def test_extract_json_ignores_braces_inside_strings():
    assert extract_json('{"note": "a } brace", "n": 2}') == {"note": "a } brace", "n": 2}


def test_extract_json_takes_first_of_two_objects():
    assert extract_json('{"a": 1} and then {"b": 2}') == {"a": 1}


def test_extract_json_tolerates_trailing_comma():
    assert extract_json('{"a": 1, "b": [1, 2,],}') == {"a": 1, "b": [1, 2]}


def test_extract_json_tolerates_single_quotes():
    assert extract_json("{'seller': 'ACME', 'total': 5}") == {"seller": "ACME", "total": 5}


def test_extract_json_skips_unparseable_object_for_next_one():
    assert extract_json('{"a": tru} then {"b": 2}') == {"b": 2}


def test_extract_json_does_not_return_fragment_of_broken_object():
    assert extract_json('{"outer": {"inner": 1}, oops}') is None


def test_extract_json_of_truncated_object_is_none():
    assert extract_json('{"total": "12.5", "date": "2024-') is None


def test_extract_json_of_array_is_none():
    assert extract_json("[1, 2, 3]") is None


def test_extract_json_of_prose_is_none():
    assert extract_json("I cannot read this invoice.") is None


def test_extract_json_ignores_objects_in_thinking():
    assert extract_json('<think>maybe {"a": 1}</think>{"b": 2}') == {"b": 2}


# --- numbers -------------------------------------------------------------------------------------


def test_extract_number_reads_thousands_separators():
    assert extract_number("The total is 1,234,567.89 dollars.") == 1234567.89


def test_extract_number_reads_negative():
    assert extract_number("Change: -3.5 points") == -3.5


def test_extract_number_reads_unicode_minus():
    assert extract_number("−7") == -7.0


def test_extract_number_keeps_percent_value():
    assert extract_number("It grew by 45%.") == 45.0


def test_extract_number_ignores_yuan_unit():
    assert extract_number("合计：1,234.50元") == 1234.5


def test_extract_number_applies_wan_magnitude():
    assert extract_number("约3.5万元") == 35000.0


def test_extract_number_reads_full_width_digits():
    assert extract_number("共１２３个") == 123.0


def test_extract_number_reads_full_width_percent():
    assert extract_number("４５％") == 45.0


def test_extract_number_takes_first_number():
    assert extract_number("2 cats and 3 dogs") == 2.0


def test_extract_number_hyphen_after_letter_is_not_minus():
    assert extract_number("COVID-19 cases") == 19.0


def test_extract_number_comma_not_in_thousands_group_ends_number():
    assert extract_number("1,23") == 1.0


def test_extract_number_of_no_number_is_none():
    assert extract_number("no digits here") is None


def test_extract_number_ignores_numbers_in_thinking():
    assert extract_number("<think>maybe 12</think>The answer is 15.") == 15.0


# --- yes / no ------------------------------------------------------------------------------------


def test_extract_yes_no_reads_leading_yes():
    assert extract_yes_no("Yes, there is a fracture.") == "yes"


def test_extract_yes_no_reads_leading_no():
    assert extract_yes_no("No.") == "no"


def test_extract_yes_no_skips_answer_prefix():
    assert extract_yes_no("**Answer:** yes") == "yes"


def test_extract_yes_no_finds_english_word_mid_sentence():
    assert extract_yes_no("I see no evidence of a mass.") == "no"


def test_extract_yes_no_reads_chinese_shi():
    assert extract_yes_no("是的，可以看到结节。") == "yes"


def test_extract_yes_no_reads_chinese_fou():
    assert extract_yes_no("答案：否") == "no"


def test_extract_yes_no_reads_chinese_you():
    assert extract_yes_no("有一个结节") == "yes"


def test_extract_yes_no_reads_chinese_meiyou_as_no():
    assert extract_yes_no("没有") == "no"


def test_extract_yes_no_reads_chinese_bushi_as_no():
    assert extract_yes_no("不是") == "no"


def test_extract_yes_no_cannot_determine_is_none():
    assert extract_yes_no("无法确定") is None


def test_extract_yes_no_does_not_search_chinese_mid_sentence():
    assert extract_yes_no("这是一张胸片") is None


def test_extract_yes_no_word_none_is_not_no():
    assert extract_yes_no("None of the above") is None


def test_extract_yes_no_uses_answer_not_thinking():
    assert extract_yes_no("<think>No... wait.</think>Yes") == "yes"


def test_extract_yes_no_of_truncated_thinking_is_none():
    assert extract_yes_no("<think>yes, probably") is None


# --- choice letters ------------------------------------------------------------------------------


def test_extract_choice_reads_bracketed_letter():
    assert extract_choice("(B)") == "B"


def test_extract_choice_reads_answer_marker():
    assert extract_choice("<think>A or B?</think>Answer: C") == "C"


def test_extract_choice_reads_chinese_xuan():
    assert extract_choice("选C") == "C"


def test_extract_choice_reads_full_width_letter():
    assert extract_choice("答案是：Ｄ") == "D"


def test_extract_choice_reads_leading_letter_with_text():
    assert extract_choice("B. Pneumonia") == "B"


def test_extract_choice_prefers_answer_over_option():
    assert extract_choice("Option A is wrong, so the answer is **B**.") == "B"


def test_extract_choice_skips_article_a():
    assert extract_choice("A pneumothorax is seen, so D") == "D"


def test_extract_choice_of_no_letter_is_none():
    assert extract_choice("I cannot tell from this image") is None


def test_extract_choice_of_truncated_thinking_is_none():
    assert extract_choice("<think>leaning towards A") is None


# --- registry ------------------------------------------------------------------------------------


def test_extractor_registry_names_every_kind():
    assert sorted(EXTRACTORS) == ["box", "choice", "json", "number", "text", "yes_no"]


def test_get_extractor_returns_registered_function():
    assert get_extractor("number") is extract_number


def test_get_extractor_unknown_name_lists_known_ones():
    with pytest.raises(
        ConfigError, match=r"extractor 'numbr': unknown extractor\. Known extractors: box, choice, json"
    ):
        get_extractor("numbr")
