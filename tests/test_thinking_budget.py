"""`max_thinking_tokens`: the thinking ends at the budget and the answer follows (a scripted model thinks).

The scripted tiny model answers a fixed chain of tokens; with thinking on it writes `<think>`, ten
thinking letters, `</think>` and the answer. A budget of 4 forces `</think>` after four letters, and
the chain goes on from there to the answer.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from support import script

from glmlab.rows import Row
from glmlab.serve import ServerSettings, create_app

THOUGHT = "<think>abcdefghij</think>XYZ"
GREEDY = {"temperature": 0, "max_new_tokens": 40}


@pytest.fixture(scope="module")
def thinker(scripted):
    script(scripted, THOUGHT)
    return scripted


def test_without_a_budget_the_scripted_model_thinks_in_full(thinker):
    answer = thinker.ask(None, "Think.", **GREEDY)
    assert (answer.thinking, answer.text, answer.thinking_truncated) == ("abcdefghij", "XYZ", False)


def test_the_budget_ends_the_thinking_and_the_answer_follows(thinker):
    answer = thinker.ask(None, "Think.", max_thinking_tokens=4, **GREEDY)
    assert (answer.thinking, answer.text, answer.thinking_truncated) == ("abcd", "XYZ", True)
    roomy = thinker.ask(None, "Think.", max_thinking_tokens=50, **GREEDY)
    assert (roomy.thinking, roomy.thinking_truncated) == ("abcdefghij", False)


def test_each_row_of_a_batch_keeps_its_own_budget(thinker):
    batch = []
    for budget in (2, None, 6):
        request = thinker.open_request(
            [{"role": "user", "content": "Think."}], max_thinking_tokens=budget, **GREEDY
        )
        batch.append(Row.open(request, thinker.text_clock()))
    thinker.generate_rows(batch)
    assert [row.stream.answer.thinking for row in batch] == ["ab", "abcdefghij", "abcdef"]
    assert [row.stream.answer.text for row in batch] == ["XYZ"] * 3


def test_the_server_takes_max_thinking_tokens(thinker):
    client = TestClient(create_app(thinker, ServerSettings(model="tiny")), base_url="http://localhost")
    body = {"messages": [{"role": "user", "content": "Think."}], "max_tokens": 40, "temperature": 0}
    message = client.post("/v1/chat/completions", json={**body, "max_thinking_tokens": 3}).json()["choices"][
        0
    ]["message"]
    assert (message["reasoning_content"], message["content"]) == ("abc", "XYZ")
    refused = client.post("/v1/chat/completions", json={**body, "max_thinking_tokens": -1})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_thinking_tokens"
