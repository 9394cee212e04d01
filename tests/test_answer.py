import pytest

from glmlab.answer import Answer, Timing, box_to_pixels, parse_boxed_values, parse_boxes, split_thinking


def test_split_thinking_with_both_tags():
    assert split_thinking("\n<think>look at it</think>\nA red circle.") == ("look at it", "A red circle.")


def test_split_thinking_with_stray_closing_tag_from_prompt():
    assert split_thinking("reasoning here</think>answer") == ("reasoning here", "answer")


def test_split_thinking_without_tags_is_all_answer():
    assert split_thinking("  just the answer ") == (None, "just the answer")


def test_split_thinking_truncated_inside_think_keeps_it_as_thinking():
    assert split_thinking("<think>still thinking when cut") == ("still thinking when cut", "")


def test_empty_think_block_gives_no_thinking():
    assert split_thinking("<think></think>\nRed.") == (None, "Red.")


def test_glm41v_answer_tags_are_unwrapped():
    assert split_thinking("<think>hmm</think><answer>42</answer>") == ("hmm", "42")


def test_unclosed_answer_tag_keeps_rest():
    assert split_thinking("<think>a</think><answer>partial") == ("a", "partial")


def test_parse_boxes_single_and_several():
    text = "cat <|begin_of_box|>[10,20,300,400]<|end_of_box|> and <|begin_of_box|>[[1,2,3,4],[5,6,7,8.5]]<|end_of_box|>"
    assert parse_boxes(text) == [[10, 20, 300, 400], [1, 2, 3, 4], [5, 6, 7, 8.5]]


def box(content: str) -> str:
    return f"<|begin_of_box|>{content}<|end_of_box|>"


@pytest.mark.parametrize(
    ("content", "boxes"),
    [
        ("[10,20,300,400]", [[10, 20, 300, 400]]),
        ("[[1,2,3,4],[5,6,7,8.5]]", [[1, 2, 3, 4], [5, 6, 7, 8.5]]),
        ("[[0, 0, 1000, 1000]]", [[0, 0, 1000, 1000]]),
        (" [ 1 , 2,3,  4 ], [5,6,7,8] ", [[1, 2, 3, 4], [5, 6, 7, 8]]),
        ("[12.5,20.25,300,400.75]", [[12.5, 20.25, 300, 400.75]]),
    ],
)
def test_four_numbers_in_0_1000_are_boxes(content, boxes):
    assert (parse_boxes(box(content)), parse_boxed_values(box(content))) == (boxes, [])


@pytest.mark.parametrize(
    "content",
    [
        "2024-03-17",  # once read as [[-2024, -17, 2024, -3]]
        "[1,2,3]",
        "[1,2,3,4,5]",
        "[1,2,3,1001]",
        "[-1,2,3,4]",
        "[[1,2,3,4],[5,6,7]]",
        "[[1,2,3,4]",
        "1,2,3,4",
        "cat [1,2,3,4]",
        "42",
    ],
)
def test_other_boxed_content_is_a_value_not_a_box(content):
    assert (parse_boxes(box(content)), parse_boxed_values(box(content))) == ([], [content])


def test_several_tags_split_into_boxes_and_values():
    text = f"On {box(' 2024-03-17 ')}: dog {box('[1,2,3,4]')}, cat {box('[[5,6,7,8],[9,10,11,12]]')}, {box('')} total {box('B')}"
    assert parse_boxes(text) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert parse_boxed_values(text) == ["2024-03-17", "B"]


def test_answer_keeps_a_boxed_date_as_its_boxed_value():
    answer = Answer.from_raw("<think>t</think>The date is <|begin_of_box|>2024-03-17<|end_of_box|>.")
    assert (answer.text, answer.boxes, answer.boxed) == ("The date is 2024-03-17.", [], ["2024-03-17"])
    assert answer.to_dict()["boxed"] == ["2024-03-17"]


def test_answer_from_raw_strips_box_tags_from_text():
    answer = Answer.from_raw("<think>t</think>The dog is at <|begin_of_box|>[1,2,3,4]<|end_of_box|>.")
    assert (answer.text, answer.thinking, answer.boxes) == ("The dog is at [1,2,3,4].", "t", [[1, 2, 3, 4]])
    assert answer.boxed == []


def test_box_to_pixels_scales_from_thousandths():
    assert box_to_pixels([0, 500, 1000, 1000], 200, 100) == (0, 50, 200, 100)


def test_timing_decode_speed_follows_vllm_definition():
    timing = Timing.from_times(start=0.0, first_token=0.5, end=2.5, completion_tokens=5)
    assert (timing.ttft_s, timing.total_s, timing.decode_tokens_per_s) == (0.5, 2.5, 2.0)


def test_timing_single_token_has_no_decode_speed():
    assert Timing.from_times(0.0, 0.1, 0.1, 1).decode_tokens_per_s is None
