from glmlab.answer import Answer, Timing, box_to_pixels, parse_boxes, split_thinking


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


def test_parse_boxes_skips_malformed():
    assert parse_boxes("<|begin_of_box|>[1,2,3]<|end_of_box|>") == []


def test_answer_from_raw_strips_box_tags_from_text():
    answer = Answer.from_raw("<think>t</think>The dog is at <|begin_of_box|>[1,2,3,4]<|end_of_box|>.")
    assert (answer.text, answer.thinking, answer.boxes) == ("The dog is at [1,2,3,4].", "t", [[1, 2, 3, 4]])


def test_box_to_pixels_scales_from_thousandths():
    assert box_to_pixels([0, 500, 1000, 1000], 200, 100) == (0, 50, 200, 100)


def test_timing_decode_speed_follows_vllm_definition():
    timing = Timing.from_times(start=0.0, first_token=0.5, end=2.5, completion_tokens=5)
    assert (timing.ttft_s, timing.total_s, timing.decode_tokens_per_s) == (0.5, 2.5, 2.0)


def test_timing_single_token_has_no_decode_speed():
    assert Timing.from_times(0.0, 0.1, 0.1, 1).decode_tokens_per_s is None
