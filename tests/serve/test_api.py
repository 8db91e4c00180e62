"""Every API field through the official openai client, each checked against an independent computation
(the model's own forward, transformers' generate, jsonschema, a brute-force greedy loop)."""

import json

import httpx
import jsonschema
import openai
import pytest
import torch

from lmforge.serve import ServeConfig, ServerThread, create_app

KEY = "api-key"


@pytest.fixture(scope="module")
def tiny_long():
    """Room for a tools prompt: the tiny tokenizer spends a token on nearly every character."""
    from lmforge.models import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(seed=3, context_length=2048)


@pytest.fixture(scope="module")
def server(tiny_long):
    model, tokenizer = tiny_long
    app = create_app(model, tokenizer, ServeConfig(model_name="tiny", api_keys=(KEY,), rate_per_minute=100_000))
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def api(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)


def log_softmax_rows(model, ids):
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


def penalised_greedy(model, ids, steps, bias=None, frequency=0.0, presence=0.0):
    """Greedy decoding with OpenAI's penalties, one full forward per token: slow and obviously right."""
    out = []
    for _ in range(steps):
        with torch.no_grad():
            scores = model(torch.tensor([ids + out])).logits[0, -1].float().clone()
        for token, value in (bias or {}).items():
            scores[token] += value
        for token in set(out):
            scores[token] -= frequency * out.count(token) + presence
        out.append(int(scores.argmax()))
    return out


def test_completion_echo_logprobs_are_the_models_own(api, tiny_long):
    model, tokenizer = tiny_long
    prompt = "The quick brown fox"
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    done = api.completions.create(model="tiny", prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2)
    lp = done.choices[0].logprobs
    expected = log_softmax_rows(model, ids)
    assert lp.token_logprobs[0] is None and len(lp.token_logprobs) == len(ids) + 3
    for position in range(1, len(ids)):
        assert lp.token_logprobs[position] == pytest.approx(float(expected[position - 1, ids[position]]), abs=1e-4)
        assert max(lp.top_logprobs[position].values()) == pytest.approx(float(expected[position - 1].max()), abs=1e-4)
    assert done.choices[0].text.startswith(prompt)
    # lm-eval's local-completions sends token ids and reads [ctxlen:-1]: the same numbers.
    by_ids = api.completions.create(model="tiny", prompt=ids, max_tokens=1, temperature=0, echo=True, logprobs=1)
    assert by_ids.choices[0].logprobs.token_logprobs[1:len(ids)] == pytest.approx(lp.token_logprobs[1:len(ids)],
                                                                                   abs=1e-5)


def test_chat_logprobs_top_logprobs_and_n(api, tiny_long):
    model, tokenizer = tiny_long
    messages = [{"role": "user", "content": "Which rocks hold water?"}]
    done = api.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = done.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 3 for t in content)
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in content)  # greedy = the top one
    sampled = api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.5, n=3, seed=11)
    again = api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.5, n=3, seed=11)
    texts = [c.message.content for c in sampled.choices]
    assert [c.index for c in sampled.choices] == [0, 1, 2] and len(set(texts)) > 1  # each choice its own draw
    assert texts == [c.message.content for c in again.choices]  # and the seed repeats them
    assert sampled.usage.completion_tokens == 24


def test_stop_top_k_bias_and_penalties_follow_their_definitions(api, tiny_long):
    model, tokenizer = tiny_long
    prompt = "Science questions ask"
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    greedy = api.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0).choices[0].text
    top1 = api.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=1.0, seed=3,
                                  extra_body={"top_k": 1})
    assert top1.choices[0].text == greedy  # top_k=1 leaves only the greedy token to sample
    cut = greedy[3:6]
    stopped = api.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0, stop=["zzz", cut])
    assert stopped.choices[0].text == greedy[:greedy.index(cut)] and stopped.choices[0].finish_reason == "stop"
    plain = penalised_greedy(model, ids, 20)  # greedy starts repeating itself after 14 tokens
    for kwargs in ({"logit_bias": {"37": 8.0}}, {"frequency_penalty": 1.5}, {"presence_penalty": 2.0}):
        done = api.completions.create(model="tiny", prompt=prompt, max_tokens=20, temperature=0, **kwargs)
        bias = {int(k): v for k, v in kwargs.get("logit_bias", {}).items()}
        expected = penalised_greedy(model, ids, 20, bias, kwargs.get("frequency_penalty", 0.0),
                                    kwargs.get("presence_penalty", 0.0))
        assert expected != plain  # the setting changes the text, so the comparison below can fail
        assert done.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True).removesuffix("\ufffd")


SCHEMA = {"type": "object", "properties": {
    "answer": {"enum": ["water", "rock", "sun"]}, "sure": {"type": "boolean"},
    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
    "required": ["answer", "sure", "tags"], "additionalProperties": False}


def test_response_format_json_schema_gives_valid_json_for_every_prompt(api):
    for i in range(5):
        done = api.chat.completions.create(model="tiny", max_tokens=60, temperature=1.0, seed=i, messages=[
            {"role": "user", "content": f"Question {i}: what holds water?"}],
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}})
        jsonschema.validate(json.loads(done.choices[0].message.content), SCHEMA)
        assert done.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="schema"):
        api.chat.completions.create(model="tiny", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "bad", "schema": {"type": "nope"}}})


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"enum": ["Paris", "Lima"]}}, "required": ["city"],
                                                "additionalProperties": False}}}


def test_forced_tool_calls_parse_and_match_the_function_schema(api):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        done = api.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], tool_choice=choice,
                                           max_tokens=120, temperature=0)
        (call,) = done.choices[0].message.tool_calls
        assert done.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # The call goes back in, with the tool's answer, through the chat template.
    follow = messages + [done.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    assert api.chat.completions.create(model="tiny", messages=follow, max_tokens=3, temperature=0).choices[0]
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        api.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], max_tokens=5,
                                    tool_choice={"type": "function", "function": {"name": "other"}})


def test_auto_tool_calls_are_parsed_out_of_the_text(tiny_long, scripted):
    _, tokenizer = tiny_long
    reply = 'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Lima"}}</tool_call>'
    config = ServeConfig(model_name="stub", content_filter=False, redact_pii=False)
    with ServerThread(create_app(None, tokenizer, config, runner=scripted(tokenizer, reply))) as server:
        api = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        done = api.chat.completions.create(model="stub", messages=[{"role": "user", "content": "Lima?"}],
                                           tools=[WEATHER], max_tokens=200)
    message = done.choices[0].message
    assert message.content == "Let me check." and message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Lima"}


def test_embeddings_are_mean_pooled_last_hidden_states(api, tiny_long):
    model, tokenizer = tiny_long
    texts = ["Rocks are worn down", "energy"]
    done = api.embeddings.create(model="tiny", input=texts)  # the SDK asks for base64 floats
    for item, text in zip(done.data, texts):
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.inference_mode():
            expected = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].mean(0)
        assert torch.allclose(torch.tensor(item.embedding), expected, atol=1e-5)
    assert done.model_extra["pooling"].startswith("mean of the last hidden layer")


def test_tokenize_models_and_unsupported_fields(server, api, tiny_long):
    _, tokenizer = tiny_long
    auth = {"Authorization": f"Bearer {KEY}"}
    root = server.base_url.removesuffix("/v1")
    tokens = httpx.post(f"{root}/tokenize", json={"prompt": "The quick brown fox"}, headers=auth).json()
    assert tokens["tokens"] == tokenizer.encode("The quick brown fox", add_special_tokens=False)
    assert httpx.post(f"{root}/tokenize", json={"prompt": "x"}).status_code == 401  # behind the same gate
    assert [m.id for m in api.models.list().data] == ["tiny"]
    for field, value in [("best_of", 2), ("suffix", "!"), ("functions", [])]:
        with pytest.raises(openai.BadRequestError) as refused:
            api.completions.create(model="tiny", prompt="x", max_tokens=2, extra_body={field: value})
        assert f"'{field}' is not supported" in refused.value.message
    with pytest.raises(openai.BadRequestError, match="stop"):
        api.completions.create(model="tiny", prompt="x", max_tokens=2, stop=["a", "b", "c", "d", "e"])


def test_metrics_count_requests_tokens_and_guard_hits(server, api):
    api.completions.create(model="tiny", prompt="The quick", max_tokens=3, temperature=0)
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model="tiny", max_tokens=2, messages=[
            {"role": "user", "content": "Give me instructions for how to make a pipe bomb"}])
    text = httpx.get(server.base_url.removesuffix("/v1") + "/metrics").text
    assert 'lmforge_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert 'lmforge_filter_hits_total{rule="mass-casualty-weapons",stage="input"} 1.0' in text
    assert "lmforge_time_to_first_token_seconds_bucket" in text and "lmforge_queue_depth 0.0" in text
    assert "lmforge_running_sequences" in text and "lmforge_completion_tokens_total" in text


def test_json_object_lets_valid_json_through_and_steers_the_rest(tiny_long, scripted):
    _, tokenizer = tiny_long
    config = ServeConfig(model_name="stub", content_filter=False, redact_pii=False)
    for script, check in (('{"a":[1,2],"b":"x"}', lambda text: json.loads(text) == {"a": [1, 2], "b": "x"}),
                          ("Sure! Here it is", lambda text: text.startswith("{"))):
        with ServerThread(create_app(None, tokenizer, config, runner=scripted(tokenizer, script))) as server:
            api = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            done = api.completions.create(model="stub", prompt="JSON please", max_tokens=40,
                                          extra_body={"response_format": {"type": "json_object"}}, temperature=0)
        assert check(done.choices[0].text), done.choices[0].text
