import threading

import pytest
from support import scene

from glmlab.answer import Answer
from glmlab.errors import AdapterError, InputError
from glmlab.images import image_to_data_url

GREEDY = {"temperature": 0, "max_new_tokens": 8}


def test_ask_returns_a_full_answer(vlm, red_image):
    answer = vlm.ask(red_image, "What colour is the circle?", **GREEDY)
    assert isinstance(answer, Answer) and answer.text
    assert answer.usage.image_tokens == 16  # 112x112 -> 8x8 patches -> 16 merged tokens
    assert answer.usage.prompt_tokens > answer.usage.image_tokens
    assert answer.usage.completion_tokens == 8 and answer.finish_reason == "length"
    assert 0 < answer.timing.ttft_s <= answer.timing.total_s
    assert answer.model == "tiny"


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(vlm, red_image):
    assert vlm.ask(red_image, "Q", **GREEDY).raw == vlm.ask(red_image, "Q", **GREEDY).raw
    first = vlm.ask(red_image, "Q", max_new_tokens=8, seed=7, temperature=1.0, top_k=0, top_p=1.0)
    again = vlm.ask(red_image, "Q", max_new_tokens=8, seed=7, temperature=1.0, top_k=0, top_p=1.0)
    other = vlm.ask(red_image, "Q", max_new_tokens=8, seed=8, temperature=1.0, top_k=0, top_p=1.0)
    assert first.raw == again.raw and other.raw != first.raw  # the seed is used, and sampling is on
    assert first.raw != vlm.ask(red_image, "Q", max_new_tokens=8, temperature=0).raw


def test_openai_and_transformers_formats_give_the_same_prompt(vlm, red_image):
    openai_format = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_to_data_url(red_image)}},
                {"type": "text", "text": "Colour?"},
            ],
        }
    ]
    transformers_format = [
        {
            "role": "user",
            "content": [{"type": "image", "image": red_image}, {"type": "text", "text": "Colour?"}],
        }
    ]
    a, b = vlm.prepare(openai_format), vlm.prepare(transformers_format)
    assert a.text == b.text
    assert a.features["input_ids"].tolist() == b.features["input_ids"].tolist()
    assert vlm.chat(openai_format, **GREEDY).raw == vlm.chat(transformers_format, **GREEDY).raw


def test_chat_does_not_mutate_the_callers_messages(vlm, red_image):
    messages = [
        {"role": "user", "content": [{"type": "image", "image": red_image}, {"type": "text", "text": "?"}]}
    ]
    snapshot = repr(messages)
    vlm.chat(messages, **GREEDY)
    assert repr(messages) == snapshot


def test_multi_turn_and_several_images_per_turn(vlm):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": scene(colour="red")},
                {"type": "image", "image": scene(colour="blue")},
                {"type": "text", "text": "Which differ?"},
            ],
        },
        {"role": "assistant", "content": "The colours."},
        {
            "role": "user",
            "content": [{"type": "image", "image": scene(56, 56)}, {"type": "text", "text": "And this?"}],
        },
    ]
    prompt = vlm.prepare(messages)
    assert prompt.text.count("<|begin_of_image|>") == 3
    assert prompt.features["image_grid_thw"].tolist() == [
        [1, 8, 8],
        [1, 8, 8],
        [1, 6, 6],
    ]  # 56x56 is scaled up to the minimum area
    assert vlm.chat(messages, **GREEDY).usage.image_tokens == 16 + 16 + 9


def test_thinking_false_renders_nothink(vlm, red_image):
    assert vlm.prepare([{"role": "user", "content": "hi"}], thinking=False).text.endswith(
        "hi/nothink<|assistant|>\n<think></think>\n"
    )


def test_stream_yields_the_same_text_as_ask(vlm, red_image):
    stream = vlm.stream(red_image, "Describe.", **GREEDY)
    pieces = list(stream)
    answer = stream.answer
    assert "".join(pieces) == answer.raw == vlm.ask(red_image, "Describe.", **GREEDY).raw
    assert len(pieces) >= 2 and answer.timing.ttft_s <= answer.timing.total_s


def test_stream_stop_keeps_what_was_generated(vlm, red_image):
    stream = vlm.stream(red_image, "Describe.", temperature=0, max_new_tokens=200)
    for _ in stream:
        stream.stop()
    answer = stream.answer
    assert 1 <= answer.usage.completion_tokens < 200 and answer.raw == stream.text


def test_stream_error_is_raised_in_the_caller(vlm):
    with pytest.raises(InputError, match="no such file"):
        vlm.stream("/missing.png", "?")


def test_stop_strings_end_the_answer(vlm, red_image):
    full = vlm.ask(red_image, "Q", temperature=0, max_new_tokens=12).raw
    marker = full.strip().split()[1]
    cut = vlm.ask(red_image, "Q", temperature=0, max_new_tokens=12, stop=[marker])
    assert marker not in cut.raw and full.startswith(cut.raw) and cut.finish_reason == "stop"


def test_a_stream_never_shows_the_stop_string_its_answer_cuts(vlm, red_image):
    full = vlm.ask(red_image, "Q", temperature=0, max_new_tokens=12).raw
    marker = full.strip().split()[1]
    stream = vlm.stream(red_image, "Q", temperature=0, max_new_tokens=12, stop=[marker])
    assert "".join(stream) == stream.answer.raw == full.split(marker, 1)[0]


def test_split_at_stop_holds_back_only_what_could_start_a_stop_string():
    from glmlab.generation import split_at_stop

    assert split_at_stop("hello wor", ["world"]) == ("hello ", "wor", False)
    assert split_at_stop("hello wx", ["world"]) == ("hello wx", "", False)
    assert split_at_stop("say END now", ["END", "STOP"]) == ("say ", "", True)
    assert split_at_stop("abc", []) == ("abc", "", False)


def test_text_only_question(vlm):
    answer = vlm.ask(None, "Hello?", **GREEDY)
    assert answer.usage.image_tokens == 0 and answer.usage.completion_tokens == 8


def test_per_call_pixel_budget_changes_image_tokens(vlm):
    big = scene(448, 448)
    assert vlm.ask(big, "?", max_new_tokens=1).usage.image_tokens == 64
    assert vlm.ask(big, "?", max_new_tokens=1, max_image_pixels=112 * 112).usage.image_tokens == 16


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_generation_settings_name_the_field(vlm, options, field):
    with pytest.raises(InputError, match=f"^{field}="):
        vlm.ask(None, "?", **options)


def test_bad_messages_are_named(vlm):
    with pytest.raises(InputError, match=r"messages\[0\]: expected a dict with 'role'"):
        vlm.chat([{"role": "wizard", "content": "x"}])
    with pytest.raises(InputError, match=r"messages\[0\]\.content\[0\]: unsupported content type 'audio'"):
        vlm.chat([{"role": "user", "content": [{"type": "audio"}]}])
    with pytest.raises(InputError, match=r"messages\[0\]\.content\[0\]: an image_url part needs"):
        vlm.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])


def test_unknown_adapter_and_missing_adapter_folder(vlm, tmp_path):
    with pytest.raises(AdapterError, match="adapter 'nope' is not loaded"):
        vlm.ask(None, "?", adapter="nope")
    with pytest.raises(AdapterError, match="no such adapter folder"):
        vlm.load_adapter(tmp_path / "missing")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_config.json").write_text("{}")
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(AdapterError, match="refused as unsafe"):
        vlm.load_adapter(tmp_path / "pickled")


def test_concurrent_asks_are_serialised_and_all_answer(vlm, red_image):
    expected = vlm.ask(red_image, "Q", **GREEDY).raw
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(vlm.ask(red_image, "Q", **GREEDY).raw))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 3
