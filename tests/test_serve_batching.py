"""Batching across requests: rows of one generate call answer exactly as each request alone would.

Library level (`VLM.generate_rows`, glmlab.rows) and through the server (`glmlab.serve.batcher`):
mixed image sizes, mixed adapters and the base model, per-row max_tokens, stop strings, seeds and
OpenAI's `n`. The server tests hold the model's lock while requests arrive, so the batch they form is
known, then compare with the same requests answered one at a time.
"""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from support import API_KEY, image_message, scene

from glmlab.rows import Row
from glmlab.serve import ServerSettings, create_app
from glmlab.serve.schemas import completion_body

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOCAL = "http://localhost"
SIZES = [(112, 112), (168, 84), (56, 224), None]  # None: a text-only request


def messages(index: int) -> list[dict]:
    size = SIZES[index % len(SIZES)]
    question = f"What is in picture {index}?"
    if size is None:
        return [{"role": "user", "content": question}]
    return image_message(scene(*size, colour=["red", "blue", "green"][index % 3]), question)


def library_messages(index: int) -> list[dict]:
    """The same conversation with PIL images (what the server hands the library after decoding)."""
    size = SIZES[index % len(SIZES)]
    question = f"What is in picture {index}?"
    if size is None:
        return [{"role": "user", "content": question}]
    image = scene(*size, colour=["red", "blue", "green"][index % 3])
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}
    ]


def open_row(vlm, index: int, **gen) -> Row:
    request = vlm.open_request(library_messages(index), **gen)
    return Row.open(request, vlm.text_clock(), request.settings.seed)


# ---- the library: VLM.generate_rows --------------------------------------------------------------


def test_greedy_rows_of_one_batch_equal_each_row_alone(served_vlm):
    options = [{"temperature": 0, "max_new_tokens": 3 + 3 * (index % 3)} for index in range(6)]
    alone = [served_vlm.chat(library_messages(i), cache=False, **options[i]) for i in range(6)]
    rows = [open_row(served_vlm, i, **options[i]) for i in range(6)]
    served_vlm.generate_rows(rows)
    for index, (row, expected) in enumerate(zip(rows, alone, strict=True)):
        answer = row.stream.answer
        assert (answer.raw, answer.finish_reason) == (expected.raw, expected.finish_reason), index
        assert answer.usage.completion_tokens == options[index]["max_new_tokens"]
        assert row.stream.text.strip() == answer.text  # what was streamed is the answer


def test_a_short_row_is_answered_before_its_batch_ends(served_vlm):
    rows = [open_row(served_vlm, 0, temperature=0, max_new_tokens=2)]
    rows.append(open_row(served_vlm, 1, temperature=0, max_new_tokens=40))
    finished = {}
    for index, row in enumerate(rows):
        row.stream.add_done_callback(lambda index=index: finished.setdefault(index, time.perf_counter()))
    served_vlm.generate_rows(rows)
    assert finished[0] < finished[1]
    assert rows[0].stream.answer.timing.total_s < rows[1].stream.answer.timing.total_s


def test_seeded_sampling_in_a_batch_equals_the_same_seed_alone(served_vlm):
    sampled = {"temperature": 0.9, "top_p": 0.9, "top_k": 20, "seed": 11, "max_new_tokens": 8}
    alone = served_vlm.chat(library_messages(0), cache=False, **sampled)
    rows = [open_row(served_vlm, 0, **sampled), open_row(served_vlm, 1, temperature=0, max_new_tokens=8)]
    served_vlm.generate_rows(rows)
    assert rows[0].stream.answer.raw == alone.raw


def test_each_row_keeps_its_own_stop_strings(served_vlm):
    reference = served_vlm.chat(library_messages(3), cache=False, temperature=0, max_new_tokens=12).raw
    stop = reference.strip()[2:4]
    rows = [
        open_row(served_vlm, 3, temperature=0, max_new_tokens=12, stop=[stop]),
        open_row(served_vlm, 3, temperature=0, max_new_tokens=12),
    ]
    served_vlm.generate_rows(rows)
    cut = rows[0].stream.answer
    assert (cut.finish_reason, cut.raw.strip()) == ("stop", reference.split(stop, 1)[0].strip())
    assert rows[1].stream.answer.raw == reference


def test_rows_about_one_image_share_its_prefill_each_with_its_own_settings(served_vlm):
    """A class asking about the same picture: one prefill of the image for the batch, every row as alone
    (greedy of two lengths, seeded sampling, a stop string)."""
    image = scene(168, 112, colour="blue")

    def conversation(question: str) -> list[dict]:
        parts = [{"type": "image", "image": image}, {"type": "text", "text": question}]
        return [{"role": "user", "content": parts}]

    cases = [
        ("What is it?", {"temperature": 0, "max_new_tokens": 4}),
        ("Describe the whole picture in detail.", {"temperature": 0, "max_new_tokens": 10}),
        ("Colour?", {"temperature": 0.9, "top_k": 20, "seed": 3, "max_new_tokens": 8}),
    ]
    alone = [served_vlm.chat(conversation(q), cache=False, **options) for q, options in cases]
    stop = alone[1].raw.strip()[3:5]
    cases.append(
        ("Describe the whole picture in detail.", {"temperature": 0, "max_new_tokens": 10, "stop": [stop]})
    )
    served_vlm.prefix_cache.clear()
    misses = served_vlm.prefix_cache.misses
    requests = [served_vlm.open_request(conversation(q), **options) for q, options in cases]
    rows = [Row.open(request, served_vlm.text_clock(), request.settings.seed) for request in requests]
    served_vlm.generate_rows(rows)
    assert served_vlm.prefix_cache.misses == misses + 1
    assert [row.stream.answer.raw for row in rows[:3]] == [answer.raw for answer in alone]
    assert rows[3].stream.answer.raw.strip() == alone[1].raw.split(stop, 1)[0].strip()


def test_rows_for_different_adapters_share_a_batch_and_answer_as_alone(adapters, tiny_path):
    import glmlab

    vlm = glmlab.load("tiny")
    vlm.load_adapter(adapters["alpha"], "alpha", activate=False)
    vlm.load_adapter(adapters["beta"], "beta", activate=False)
    choices = ["alpha", None, "beta", "alpha"]
    assert vlm.can_share_batch(choices)
    alone = [
        vlm.chat(library_messages(i), adapter=name, cache=False, temperature=0, max_new_tokens=6)
        for i, name in enumerate(choices)
    ]
    rows = [open_row(vlm, i, adapter=name, temperature=0, max_new_tokens=6) for i, name in enumerate(choices)]
    vlm.generate_rows(rows)
    assert [row.stream.answer.raw for row in rows] == [answer.raw for answer in alone]
    assert len({answer.raw for answer in alone}) > 1  # the adapters do change the answers
    assert vlm.active_adapter is None  # the mixed batch restored the model's own state
    vlm.load_adapter(adapters["seeing"], "seeing", activate=False)  # adapts the vision tower
    assert not vlm.can_share_batch(["alpha", None]) and vlm.can_share_batch(["alpha", "alpha"])


def test_a_row_stopped_while_it_waited_finishes_empty_and_a_bad_adapter_fails_alone(served_vlm):
    waiting = open_row(served_vlm, 0, temperature=0, max_new_tokens=5)
    waiting.stream.stop()
    gone = open_row(served_vlm, 1, temperature=0, max_new_tokens=5)
    gone.request.adapter = "unloaded"
    fine = open_row(served_vlm, 2, temperature=0, max_new_tokens=5)
    served_vlm.generate_rows([waiting, gone, fine])
    assert waiting.stream.answer.usage.completion_tokens == 0
    with pytest.raises(Exception, match="adapter 'unloaded' is not loaded"):
        _ = gone.stream.answer
    assert fine.stream.answer.usage.completion_tokens == 5


# ---- the server: requests that wait together run together ----------------------------------------


@pytest.fixture(scope="module")
def batching_app(adapters, tiny_path):
    import glmlab

    vlm = glmlab.load("tiny")
    settings = ServerSettings(
        model="tiny",
        adapters={"alpha": str(adapters["alpha"]), "beta": str(adapters["beta"])},
        api_key=API_KEY,
        max_batch_size=8,
        max_n=4,
    )
    app = create_app(vlm, settings)
    batches: list[int] = []
    app.state.host.batcher.on_batch = lambda rows: batches.append(len(rows))
    with TestClient(app, base_url=LOCAL, headers=AUTH) as client:
        yield client, vlm, batches


def post_while_busy(client, vlm, bodies: list[dict]) -> list:
    """Post `bodies` at once while the model is held, so they queue and form one batch together."""
    host = client.app.state.host
    responses: list = [None] * len(bodies)

    def send(index: int) -> None:
        responses[index] = client.post("/v1/chat/completions", json=bodies[index])

    with vlm.lock:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(host.batcher.waiting) + len(host.batcher.running) < len(bodies):
            assert time.monotonic() < deadline, "the requests did not all queue"
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    return responses


def test_concurrent_mixed_adapter_requests_batch_and_answer_as_one_at_a_time(batching_app):
    client, vlm, batches = batching_app
    models = ["alpha", "tiny", "beta", "alpha", "tiny", "beta"]
    bodies = [
        {"model": model, "messages": messages(i), "temperature": 0, "max_tokens": 4 + i % 3}
        for i, model in enumerate(models)
    ]
    batches.clear()
    responses = post_while_busy(client, vlm, bodies)
    assert max(batches) >= 5, batches  # the first may start alone; the rest wait together
    for index, (body, response) in enumerate(zip(bodies, responses, strict=True)):
        assert response.status_code == 200, response.text
        adapter = None if body["model"] == "tiny" else body["model"]
        alone = vlm.chat(
            library_messages(index),
            adapter=adapter,
            cache=False,
            temperature=0,
            max_new_tokens=body["max_tokens"],
        )
        expected = completion_body("id", body["model"], [alone])
        assert response.json()["choices"] == expected["choices"], index
        assert response.json()["usage"] == expected["usage"]


def test_a_class_asking_about_one_picture_shares_one_prefill(batching_app):
    """Requests from different users about the same picture (each its own data URL) that run in one
    batch prefill the picture once; each answers as it would alone."""
    client, vlm, batches = batching_app
    picture = scene(140, 112, colour="green")
    questions = ["What is it?", "Which colour is the shape?", "Where is it?", "Describe it."]
    bodies = [
        {"messages": image_message(picture, question), "temperature": 0, "max_tokens": 5}
        for question in questions
    ]
    vlm.prefix_cache.clear()
    misses = vlm.prefix_cache.misses
    batches.clear()
    responses = post_while_busy(client, vlm, bodies)
    assert sum(batches) == len(bodies) and max(batches) >= 3  # the first may start alone
    assert vlm.prefix_cache.misses == misses + 1  # the picture was prefilled once in all
    for question, response in zip(questions, responses, strict=True):
        messages_ = [{"role": "user", "content": [{"type": "image", "image": picture}, question]}]
        alone = vlm.chat(messages_, cache=False, temperature=0, max_new_tokens=5)
        assert response.json()["choices"] == completion_body("id", "tiny", [alone])["choices"]


def test_streamed_requests_in_one_batch_each_get_their_own_answer(batching_app):
    client, vlm, _ = batching_app
    bodies = [{"messages": messages(i), "temperature": 0, "max_tokens": 5, "stream": True} for i in range(4)]
    responses = post_while_busy(client, vlm, bodies)
    for index, response in enumerate(responses):
        chunks = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
        streamed = "".join(
            __import__("json").loads(chunk)["choices"][0]["delta"].get("content") or "" for chunk in chunks
        )
        alone = vlm.chat(library_messages(index), cache=False, temperature=0, max_new_tokens=5)
        assert streamed.strip() == completion_body("id", "tiny", [alone])["choices"][0]["message"]["content"]


def test_n_choices_run_as_one_batch(batching_app):
    client, vlm, batches = batching_app
    batches.clear()
    greedy = client.post(
        "/v1/chat/completions", json={"messages": messages(1), "temperature": 0, "max_tokens": 5, "n": 3}
    )
    assert greedy.status_code == 200, greedy.text
    choices = greedy.json()["choices"]
    assert [choice["index"] for choice in choices] == [0, 1, 2] and batches == [3]
    assert len({choice["message"]["content"] for choice in choices}) == 1  # greedy: all the same
    assert greedy.json()["usage"]["completion_tokens"] == 15
    body = {"messages": messages(1), "temperature": 1.0, "seed": 5, "max_tokens": 8, "n": 3}
    sampled = [client.post("/v1/chat/completions", json=body).json()["choices"] for _ in range(2)]
    assert sampled[0] == sampled[1]  # seeded: reproducible
    assert len({choice["message"]["content"] for choice in sampled[0]}) > 1  # choice i samples with seed + i
    too_many = client.post("/v1/chat/completions", json={**body, "n": 5})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["message"] == (
        "n=5 asks for more choices than this server gives one request (4, --max-n)."
    )


def test_a_request_that_finds_no_place_in_time_gets_429(adapters, tiny_path):
    import glmlab

    vlm = glmlab.load("tiny")
    settings = ServerSettings(model="tiny", api_key=API_KEY, max_queue_wait_s=0.3)
    with TestClient(create_app(vlm, settings), base_url=LOCAL, headers=AUTH) as client:
        with vlm.lock:  # the model is busy with another batch
            first = threading.Thread(
                target=client.post,
                args=("/v1/chat/completions",),
                kwargs={"json": {"messages": messages(3), "max_tokens": 2}},
            )
            first.start()
            time.sleep(0.5)
            response = client.post("/v1/chat/completions", json={"messages": messages(3), "max_tokens": 2})
        first.join()
        assert response.status_code == 429 and response.headers["Retry-After"] == "5"
        assert response.json()["error"]["message"] == (
            "the server is busy: the request waited 0.3 s (--max-queue-wait) without a place in a batch; "
            "retry later."
        )
        assert client.app.state.host.batcher.waiting == []
        assert (
            client.post("/v1/chat/completions", json={"messages": messages(3), "max_tokens": 2}).status_code
            == 200
        )


def test_a_batch_waits_for_requests_still_being_decoded_but_a_lone_one_never_waits(served_vlm):
    from glmlab.serve.batcher import Batcher

    preparing, sizes = [1], []
    batcher = Batcher(
        lambda: served_vlm,
        8,
        on_batch=lambda rows: sizes.append(len(rows)),
        preparing=lambda: preparing[0],
        gather_s=30,
    )
    first = open_row(served_vlm, 0, temperature=0, max_new_tokens=2)
    batcher.submit([first])
    time.sleep(0.3)  # another request is still decoding: the batch waits for it
    assert not first.started.is_set()
    second = open_row(served_vlm, 1, temperature=0, max_new_tokens=2)
    preparing[0] = 0
    batcher.submit([second])
    assert first.stream.wait(60) and second.stream.wait(60)
    assert sizes == [2]
    start = time.monotonic()
    alone = open_row(served_vlm, 2, temperature=0, max_new_tokens=2)
    batcher.submit([alone])
    assert alone.started.wait(10) and time.monotonic() - start < 5  # nothing on its way: no wait
