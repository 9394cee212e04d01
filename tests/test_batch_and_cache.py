"""Batched generation and image-prefix cache reuse must not change a single greedy token."""

import pytest
from support import scene

from glmlab.prefix_cache import PrefixCache

GREEDY = {"temperature": 0, "max_new_tokens": 10}


def test_batch_equals_one_by_one_in_input_order(vlm):
    items = [
        (scene(112, 112, "red"), "What colour?"),
        (scene(168, 112, "blue"), "Which shape is it here?"),
        (None, "Hello?"),
        {"images": [scene(56, 56), scene(84, 84)], "question": "Count", "system": "Brief."},
        {"messages": [{"role": "user", "content": "Just text"}]},
    ]
    expected = [vlm.ask(images, question, cache=False, **GREEDY).raw for images, question in items[:3]]
    expected.append(vlm.ask(items[3]["images"], "Count", system="Brief.", cache=False, **GREEDY).raw)
    expected.append(vlm.chat(items[4]["messages"], cache=False, **GREEDY).raw)
    answers = vlm.batch(items, batch_size=3, **GREEDY)
    assert [answer.raw for answer in answers] == expected
    assert all(answer.usage.completion_tokens == 10 for answer in answers)


def test_seeded_sampling_in_a_batch_answers_each_item_as_it_would_alone(vlm):
    sampled = {"temperature": 1.0, "top_k": 30, "seed": 7, "max_new_tokens": 8}
    items = [(scene(112, 112, "red"), "What colour?"), (None, "Hello?"), (scene(56, 56), "Count")]
    alone = [vlm.ask(image, question, cache=False, **sampled).raw for image, question in items]
    assert [answer.raw for answer in vlm.batch(items, batch_size=3, **sampled)] == alone
    assert len(set(alone)) == 3


def test_questions_about_one_image_share_its_prefill_and_answer_as_alone(vlm):
    image = scene(140, 112, "green")
    questions = ["Colour?", "Which shape is drawn here, and where?", "Count the shapes, please."]
    settings = {"temperature": 0, "max_new_tokens": 8, "repetition_penalty": 1.3}
    alone = [vlm.ask(image, question, cache=False, **settings).raw for question in questions]
    vlm.prefix_cache.clear()
    misses, hits = vlm.prefix_cache.misses, vlm.prefix_cache.hits
    items = [(image, question) for question in questions]
    assert [answer.raw for answer in vlm.batch(items, batch_size=3, **settings)] == alone
    assert (vlm.prefix_cache.misses, vlm.prefix_cache.hits) == (misses + 1, hits)  # one prefill for three
    assert [answer.raw for answer in vlm.batch(items, batch_size=3, **settings)] == alone
    assert vlm.prefix_cache.hits == hits + 1  # the next batch about it starts from the cache
    before = (vlm.prefix_cache.misses, vlm.prefix_cache.hits)
    assert [answer.raw for answer in vlm.batch(items, batch_size=3, cache=False, **settings)] == alone
    assert (vlm.prefix_cache.misses, vlm.prefix_cache.hits) == before


def test_different_images_in_one_batch_do_not_share_a_prefix(vlm):
    items = [(scene(112, 112, "red"), "Colour?"), (scene(112, 112, "blue"), "Colour?")]
    alone = [vlm.ask(image, question, cache=False, **GREEDY).raw for image, question in items]
    misses, hits = vlm.prefix_cache.misses, vlm.prefix_cache.hits
    assert [answer.raw for answer in vlm.batch(items, batch_size=2, **GREEDY)] == alone
    assert (vlm.prefix_cache.misses, vlm.prefix_cache.hits) == (misses, hits)


def test_bf16_batch_and_prefix_cache_give_the_same_greedy_tokens(vlm_bf16):
    """The bf16 rule for batch = loop and cached = uncached is the float32 one: equal greedy tokens.

    bf16 rounds every matmul result, so these invariants hold only where both sides reduce in the same
    order. On the CPU they do: a left-padded row and the same prompt alone, a prefill from a cached
    image prefix and a full prefill, give the same last-position logits to the bit on the tiny model
    (measured max difference 0.0), so no tolerance is needed; rows sharing a cached prefix too. merged = base + adapter is where bf16
    cannot be exact (test_export).
    """
    import torch

    assert vlm_bf16.model.dtype == torch.bfloat16
    settings = {"temperature": 0, "max_new_tokens": 6}
    items = [(scene(112, 112, "red"), "What colour?"), (None, "Hello?")]
    loop = [vlm_bf16.ask(image, question, cache=False, **settings).raw for image, question in items]
    assert [answer.raw for answer in vlm_bf16.batch(items, batch_size=2, **settings)] == loop
    hits = vlm_bf16.prefix_cache.hits
    for _ in range(2):  # the first call fills the prefix cache, the second answers from it
        assert vlm_bf16.ask(*items[0], **settings).raw == loop[0]
    assert vlm_bf16.prefix_cache.hits == hits + 1
    same_image = [items[0], (items[0][0], "Which shape is drawn, and where?")]
    alone = [vlm_bf16.ask(image, question, cache=False, **settings).raw for image, question in same_image]
    assert [answer.raw for answer in vlm_bf16.batch(same_image, batch_size=2, **settings)] == alone
    assert vlm_bf16.prefix_cache.hits == hits + 2  # the batch started from the cached prefix


def test_batch_reports_a_bad_item_and_keeps_the_others(vlm):
    answers = vlm.batch([(scene(), "Q"), ("/missing.png", "Q"), (scene(), "Q")], batch_size=8, **GREEDY)
    assert [answer.finish_reason for answer in answers] == ["length", "error", "length"]
    assert answers[1].error == "/missing.png: no such file." and answers[1].text == ""
    assert answers[0].raw == answers[2].raw == vlm.ask(scene(), "Q", cache=False, **GREEDY).raw


def test_batch_groups_similar_prompts_to_limit_padding(vlm):
    from glmlab import batching

    items = [
        vlm._prepare_item(i, (scene(size, size), "Q"), None, None)
        for i, size in enumerate([112, 224, 112, 224])
    ]
    groups = batching.group_for_padding(items, batch_size=2)
    assert [[item.index for item in group] for group in groups] == [[0, 2], [1, 3]]


@pytest.mark.parametrize("size", [(112, 112), (224, 140), (56, 84), (336, 336)])
def test_cached_answers_are_token_identical_across_image_sizes(vlm, size):
    image = scene(*size)
    for question in ["First question?", "A different, longer second question?"]:
        assert vlm.ask(image, question, **GREEDY).raw == vlm.ask(image, question, cache=False, **GREEDY).raw


@pytest.mark.parametrize("thinking", [None, False])
def test_cached_multi_turn_prefix_is_token_identical(vlm, thinking):
    messages = [
        {"role": "system", "content": "You are careful."},
        {
            "role": "user",
            "content": [{"type": "image", "image": scene(112, 84)}, {"type": "text", "text": "Q1"}],
        },
        {"role": "assistant", "content": "A1"},
        {
            "role": "user",
            "content": [{"type": "image", "image": scene(56, 112, "blue")}, {"type": "text", "text": "Q2"}],
        },
        {"role": "assistant", "content": "A2"},
        {"role": "user", "content": "And now, Q3?"},
    ]
    for _ in range(2):  # first call fills the cache, second hits it
        cached = vlm.chat(messages, thinking=thinking, **GREEDY).raw
        assert cached == vlm.chat(messages, thinking=thinking, cache=False, **GREEDY).raw


def test_second_question_hits_the_cache_and_a_changed_image_never_does(vlm):
    image = scene(140, 140, "green")
    vlm.ask(image, "one", **GREEDY)
    hits, misses = vlm.prefix_cache.hits, vlm.prefix_cache.misses
    vlm.ask(image.copy(), "two", **GREEDY)
    assert (vlm.prefix_cache.hits, vlm.prefix_cache.misses) == (hits + 1, misses)
    changed = image.copy()
    changed.putpixel((0, 0), (0, 0, 0))
    vlm.ask(changed, "two", **GREEDY)
    assert (vlm.prefix_cache.hits, vlm.prefix_cache.misses) == (hits + 1, misses + 1)


def test_cache_stays_within_its_byte_bound(vlm):
    original = vlm.prefix_cache
    try:
        vlm.prefix_cache = PrefixCache(max_bytes=30_000)  # one 112x112 prefix is ~11 KB on the tiny model
        for colour in ["red", "green", "blue", "yellow", "purple"]:
            vlm.ask(scene(colour=colour), "Q", **GREEDY)
            assert vlm.prefix_cache.nbytes <= 30_000
        assert len(vlm.prefix_cache) == 2
        vlm.prefix_cache = PrefixCache(max_bytes=1_000)  # an entry over the bound is not kept at all
        vlm.ask(scene(), "Q", **GREEDY)
        assert len(vlm.prefix_cache) == 0
    finally:
        vlm.prefix_cache = original


def test_session_answers_like_ask_and_computes_the_prefix_once(vlm):
    image = scene(112, 168, "purple")
    session = vlm.session(image, system="Short answers.")
    questions = ["What colour?", "What shape?", "How many?"]
    answers = [session.ask(question, **GREEDY).raw for question in questions]
    assert answers == [
        vlm.ask(image, q, system="Short answers.", cache=False, **GREEDY).raw for q in questions
    ]
    assert (session.prefix_cache.misses, session.prefix_cache.hits) == (1, 2)


def test_streamed_answer_uses_the_cache_identically(vlm):
    image = scene(112, 112, "orange")
    vlm.ask(image, "warm", **GREEDY)
    stream = vlm.stream(image, "Describe", **GREEDY)
    assert "".join(stream) == vlm.ask(image, "Describe", cache=False, **GREEDY).raw


def test_a_weight_change_in_place_never_reuses_an_old_prefix(tiny_path):
    import torch

    import glmlab

    model = glmlab.load(tiny_path)
    image = scene(112, 112, "teal")
    model.ask(image, "Q", **GREEDY)
    with torch.no_grad():  # what an optimiser step does to a weight
        model.model.model.language_model.layers[0].self_attn.k_proj.weight.mul_(3.0)
    cached = model.ask(image, "Q", **GREEDY).raw
    assert cached == model.ask(image, "Q", cache=False, **GREEDY).raw
    assert model.prefix_cache.misses == 2


def test_a_session_never_reuses_a_prefix_across_an_adapter_swap_under_the_same_name(tiny_path, tmp_path):
    import glmlab
    from glmlab.adapters import random_adapter

    model = glmlab.load(tiny_path)
    first, second = (
        random_adapter(model, tmp_path / "a", seed=1),
        random_adapter(model, tmp_path / "b", seed=2),
    )
    model.load_adapter(first, "domain")
    session = model.session(scene(112, 140, "navy"))
    session.ask("Q", **GREEDY)
    model.unload_adapter("domain")
    model.load_adapter(second, "domain")
    expected = model.ask(scene(112, 140, "navy"), "Q", cache=False, **GREEDY).raw
    assert expected != model.ask(scene(112, 140, "navy"), "Q", adapter=None, cache=False, **GREEDY).raw
    assert session.ask("Q", **GREEDY).raw == expected
    assert (session.prefix_cache.misses, session.prefix_cache.hits) == (2, 0)


def test_a_lru_hit_protects_an_entry_from_eviction(vlm):
    original = vlm.prefix_cache
    try:
        vlm.prefix_cache = PrefixCache(max_bytes=30_000)  # room for two 112x112 prefixes
        a, b, c = scene(colour="red"), scene(colour="green"), scene(colour="blue")
        for image in (a, b, a, c):  # a is used again after b, so b is the least recently used
            vlm.ask(image, "Q", **GREEDY)
        misses = vlm.prefix_cache.misses
        vlm.ask(a, "Q", **GREEDY)
        assert vlm.prefix_cache.misses == misses
        vlm.ask(b, "Q", **GREEDY)
        assert vlm.prefix_cache.misses == misses + 1
    finally:
        vlm.prefix_cache = original


def test_an_unknown_adapter_or_batch_size_fails_the_whole_call_up_front(vlm):
    from glmlab.errors import AdapterError, InputError

    with pytest.raises(AdapterError, match="adapter 'nope' is not loaded"):
        vlm.batch([(scene(), "Q")], adapter="nope", **GREEDY)
    with pytest.raises(AdapterError, match="adapter 'nope' is not loaded"):
        vlm.stream(scene(), "Q", adapter="nope", **GREEDY)
    with pytest.raises(InputError, match="batch_size=0: must be an integer >= 1"):
        vlm.batch([(scene(), "Q")], batch_size=0, **GREEDY)
