"""Bad requests against every API route: each gets its 4xx with an OpenAI-style error body naming the problem, never
a 500, and the server answers the next good request exactly as before."""

from __future__ import annotations

import httpx
import pytest

KEY = "api-fault-key"
GOOD = {"prompt": "Rocks are worn down", "max_tokens": 6, "temperature": 0}

# (id, method, path, body or raw bytes, extra headers, expected status, text the error names)
CASES = [
    ("max-tokens-0", "/v1/completions", {**GOOD, "max_tokens": 0}, {}, 400, "max_tokens"),
    ("max-tokens-true", "/v1/completions", {**GOOD, "max_tokens": True}, {}, 400, "max_tokens"),
    ("max-tokens-negative", "/v1/completions", {**GOOD, "max_tokens": -3}, {}, 400, "max_tokens"),
    ("max-tokens-fraction", "/v1/completions", {**GOOD, "max_tokens": 2.5}, {}, 400, "max_tokens"),
    ("max-tokens-over-the-limit", "/v1/completions", {**GOOD, "max_tokens": 10_000}, {}, 400, "max_tokens"),
    ("seed-2-to-the-70", "/v1/completions", {**GOOD, "seed": 2**70}, {}, 400, "seed"),
    ("temperature-text", "/v1/completions", {**GOOD, "temperature": "hot"}, {}, 400, "temperature"),
    ("temperature-over-2", "/v1/completions", {**GOOD, "temperature": 9}, {}, 400, "temperature"),
    ("top-p-0", "/v1/completions", {**GOOD, "top_p": 0}, {}, 400, "top_p"),
    ("n-0", "/v1/completions", {**GOOD, "n": 0}, {}, 400, "n"),
    ("five-stops", "/v1/completions", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, {}, 400, "stop"),
    ("logit-bias-not-a-token", "/v1/completions", {**GOOD, "logit_bias": {"x": 1}}, {}, 400, "logit_bias"),
    ("token-id-out-of-vocab", "/v1/completions", {**GOOD, "prompt": [[1, 2], [99999]]}, {}, 400, "prompt"),
    ("unknown-field", "/v1/completions", {**GOOD, "suffix": "!"}, {}, 400, "suffix"),
    ("prompt-missing", "/v1/completions", {"max_tokens": 4}, {}, 400, "prompt"),
    ("body-not-json", "/v1/completions", b"{not json", {"Content-Type": "application/json"}, 400, "JSON"),
    ("body-a-list", "/v1/completions", [1, 2, 3], {}, 400, "invalid request"),
    ("body-over-the-limit", "/v1/completions", {**GOOD, "prompt": "x" * 5000}, {}, 413, "over the limit"),
    ("chat-no-messages", "/v1/chat/completions", {"messages": [], "max_tokens": 4}, {}, 400, "messages"),
    ("chat-bad-role", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, {}, 400, "role"),
    ("chat-max-completion-tokens-0", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}, {}, 400, "max_completion_tokens"),
    ("embeddings-empty-list", "/v1/embeddings", {"input": []}, {}, 400, "input"),
    ("embeddings-bad-format", "/v1/embeddings", {"input": "hi", "encoding_format": "hex"}, {}, 400, "encoding_format"),
    ("tokenize-no-text", "/tokenize", {}, {}, 400, "prompt"),
    ("no-key", "/v1/completions", GOOD, {"Authorization": ""}, 401, "API key"),
    ("wrong-key", "/v1/completions", GOOD, {"Authorization": "Bearer nope"}, 401, "API key"),
    ("non-ascii-key", "/v1/completions", GOOD, {"Authorization": "Bearer kéy".encode("latin-1")}, 401, "not ASCII"),
]


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    from lmforge.serve import ServeConfig, ServerThread, create_app

    model, tokenizer = tiny
    config = ServeConfig(model_name="tiny", api_keys=(KEY,), rate_per_minute=100_000, max_request_bytes=4096,
                         max_tokens_limit=64, auth_failures_per_minute=1000,
                         usage_log=str(tmp_path_factory.mktemp("usage") / "usage.jsonl"))
    with ServerThread(create_app(model, tokenizer, config)) as running:
        yield running


def send(server, path, body, headers):
    headers = {"Authorization": f"Bearer {KEY}", **headers}
    url = server.base_url.removesuffix("/v1") + path
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers=headers, timeout=60)
    return httpx.post(url, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("path,body,headers,status,named", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_request_gets_its_4xx_and_the_next_good_one_answers_as_before(server, path, body, headers, status, named):
    before = send(server, "/v1/completions", GOOD, {})
    assert before.status_code == 200
    reply = send(server, path, body, headers)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert named.lower() in (error["message"] + " " + str(error.get("param"))).lower(), error
    after = send(server, "/v1/completions", GOOD, {})
    assert after.status_code == 200 and after.json()["choices"][0]["text"] == before.json()["choices"][0]["text"]


def test_there_are_at_least_twenty_api_cases():
    assert len(CASES) >= 20 and len({c[1] for c in CASES}) >= 4
