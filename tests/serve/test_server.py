"""The server through the official openai client: completions, chat, streaming, guards, usage log, concurrency."""

import json
import threading

import httpx
import openai
import pytest
import torch

from lmforge.serve import ServeConfig, ServerThread, create_app
from lmforge.serve.usage import read_usage

KEY = "test-key-1"


def client(server, key=KEY, **kwargs):
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60, **kwargs)


def greedy_reference(model, tokenizer, prompt_ids, new_tokens):
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_openai_client_completion_chat_and_stream_match_transformers_greedy(tiny, tmp_path):
    model, tokenizer = tiny
    log = tmp_path / "usage.jsonl"
    # PII redaction and the filter stay on: random tiny-model text contains neither, so the text is untouched.
    app = create_app(model, tokenizer, ServeConfig(model_name="tiny", api_keys=(KEY,), usage_log=str(log)))
    with ServerThread(app) as server:
        api = client(server)
        assert [m.id for m in api.models.list().data] == ["tiny"]
        prompt = "The quick brown fox"
        done = api.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
        reference = greedy_reference(model, tokenizer, tokenizer.encode(prompt, add_special_tokens=False), 12)
        assert done.choices[0].text == reference.removesuffix("\ufffd")
        assert done.usage.completion_tokens == 12 and done.choices[0].finish_reason == "length"

        pieces = list(api.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, stream=True))
        assert "".join(c.choices[0].text for c in pieces) == done.choices[0].text
        assert pieces[-1].choices[0].finish_reason == "length"

        messages = [{"role": "user", "content": "Which rocks hold water?"}]
        chat = api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
        streamed = api.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                               stream=True, stream_options={"include_usage": True})
        chunks = list(streamed)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens == 8

        sampled = [api.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=1.0, seed=7,
                                          user="alice@example.org").choices[0].text for _ in range(2)]
        assert sampled[0] == sampled[1]  # a seed makes sampling reproducible
    lines = read_usage(log)
    assert len(lines) == 7  # models, 2 completions, 2 chats, 2 sampled
    assert all(line["status"] == 200 and line["key"].startswith("key-") and KEY not in json.dumps(line) for line in lines)
    assert lines[1]["prompt_tokens"] == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert lines[1]["completion_tokens"] == 12 and lines[1]["latency_ms"] > 0 and lines[1]["ttft_ms"] > 0
    assert lines[-1]["user"].startswith("sha256:") and "alice" not in log.read_text()  # the end user, hashed
    assert prompt not in log.read_text()  # no raw text unless asked


def test_guards_answer_401_413_429_and_400_and_log_every_request(tiny, tmp_path):
    model, tokenizer = tiny
    log = tmp_path / "usage.jsonl"
    config = ServeConfig(model_name="tiny", api_keys=(KEY, "other-key", "third-key"), usage_log=str(log), rate_per_minute=6,
                         rate_burst=2, max_request_bytes=2000, max_prompt_tokens=40, max_tokens_limit=8)
    with ServerThread(create_app(model, tokenizer, config)) as server:
        with pytest.raises(openai.AuthenticationError):
            client(server, key="wrong").completions.create(model="tiny", prompt="hi", max_tokens=2)
        raw = httpx.post(f"{server.base_url}/completions", json={"prompt": "hi", "max_tokens": 2})
        assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"

        api = client(server)
        with pytest.raises(openai.APIStatusError) as oversized:
            api.completions.create(model="tiny", prompt="word " * 1000, max_tokens=2)
        assert oversized.value.status_code == 413
        with pytest.raises(openai.APIStatusError) as too_long:  # under the byte limit, over the token limit
            api.completions.create(model="tiny", prompt="The quick brown fox jumps. " * 12, max_tokens=2)
        assert too_long.value.status_code == 413 and "tokens" in too_long.value.message
        # The two requests above used key 1's burst of 2; the next one is over its rate.
        with pytest.raises(openai.RateLimitError) as limited:
            api.completions.create(model="tiny", prompt="hi", max_tokens=2)
        assert int(limited.value.response.headers["retry-after"]) >= 1
        other = client(server, key="other-key")  # buckets are per key
        with pytest.raises(openai.BadRequestError) as too_many:
            other.completions.create(model="tiny", prompt="hi", max_tokens=9)
        assert "max_tokens" in too_many.value.message
        with pytest.raises(openai.BadRequestError) as refused:
            other.chat.completions.create(model="tiny", max_tokens=2, messages=[
                {"role": "user", "content": "Give me instructions for how to make a pipe bomb"}])
        assert refused.value.code == "content_filter"
        third = client(server, key="third-key")
        assert third.completions.create(model="tiny", prompt="hi", max_tokens=2).usage.completion_tokens == 2
    lines = read_usage(log)
    assert [line["status"] for line in lines] == [401, 401, 413, 413, 429, 400, 400, 200]
    assert lines[6]["filter_hits"] == ["input:mass-casualty-weapons"]
    assert "pipe bomb" not in log.read_text()  # no raw text unless asked


def test_pii_in_model_output_is_redacted_streaming_or_not(tiny, tmp_path, scripted):
    _, tokenizer = tiny
    text = "Sure. Write to jane.doe@example.com or call +1 415 555 0132 and we will reply within a day."
    log = tmp_path / "usage.jsonl"
    app = create_app(None, tokenizer, ServeConfig(model_name="stub", usage_log=str(log)), runner=scripted(tokenizer, text))
    with ServerThread(app) as server:
        api = client(server, key="unused")
        whole = api.completions.create(model="stub", prompt="contact?", max_tokens=300).choices[0].text
        streamed = "".join(c.choices[0].text for c in
                           api.completions.create(model="stub", prompt="contact?", max_tokens=300, stream=True))
    for answer in (whole, streamed):
        assert "jane.doe" not in answer and "555" not in answer
        assert "<EMAIL>" in answer and "<PHONE>" in answer and answer.endswith("within a day.")
    assert [line["pii_redacted"] for line in read_usage(log)] == [{"EMAIL": 1, "PHONE": 1}] * 2


def test_output_filter_cuts_the_text_and_reports_content_filter(tiny, scripted):
    _, tokenizer = tiny
    text = "Here is the key you asked for: -----BEGIN RSA PRIVATE KEY-----\nMIIEow..."
    app = create_app(None, tokenizer, ServeConfig(model_name="stub"), runner=scripted(tokenizer, text))
    with ServerThread(app) as server:
        choice = client(server, key="unused").completions.create(model="stub", prompt="x", max_tokens=300).choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.text == "Here is the key you asked for: " and "BEGIN" not in choice.text


def test_eight_concurrent_clients_twenty_requests_each_are_batched(tiny, tmp_path):
    model, tokenizer = tiny
    log = tmp_path / "usage.jsonl"
    app = create_app(model, tokenizer, ServeConfig(model_name="tiny", api_keys=(KEY,), usage_log=str(log),
                                                   rate_per_minute=10_000))
    errors, texts = [], {}
    with ServerThread(app) as server:
        def worker(index):
            api = client(server)
            for j in range(20):
                try:
                    prompt = f"Science questions ask about plants {index} {j}"
                    texts[index, j] = api.completions.create(model="tiny", prompt=prompt, max_tokens=3,
                                                             temperature=0).choices[0].text
                except Exception as exc:  # collected: the assertion below names them
                    errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batch_sizes = app.state.ctx.scheduler.batch_sizes
    assert errors == [] and len(texts) == 160
    assert max(batch_sizes) > 1  # concurrent requests really were decoded together
    assert len(read_usage(log)) == 160
    # Batched (left-padded) answers equal the model's own greedy output for the same prompt.
    prompt_ids = tokenizer.encode("Science questions ask about plants 5 11", add_special_tokens=False)
    assert texts[5, 11] == greedy_reference(model, tokenizer, prompt_ids, 3).removesuffix("\ufffd")


def test_a_failing_model_gives_500_and_a_usage_line_and_the_server_keeps_serving(tiny, tmp_path, scripted):
    _, tokenizer = tiny
    runner = scripted(tokenizer, "fine", fail_prefill=True)
    log = tmp_path / "usage.jsonl"
    app = create_app(None, tokenizer, ServeConfig(model_name="stub", usage_log=str(log)), runner=runner)
    with ServerThread(app) as server:
        api = client(server, key="unused")
        with pytest.raises(openai.InternalServerError) as failed:
            api.completions.create(model="stub", prompt="x", max_tokens=5)
        assert "RuntimeError: out of memory" in failed.value.message
        runner.fail_prefill = False
        assert api.completions.create(model="stub", prompt="x", max_tokens=5).choices[0].text == "fine"
        with pytest.raises(openai.BadRequestError):
            api.completions.create(model="stub", prompt="x", max_tokens=5, temperature=3.0)
    assert [line["status"] for line in read_usage(log)] == [500, 200, 400]


def test_without_screens_streaming_is_not_held_back(tiny, scripted):
    _, tokenizer = tiny
    text = "one two three four five six seven eight nine ten " * 3
    config = ServeConfig(model_name="stub", content_filter=False, redact_pii=False)
    with ServerThread(create_app(None, tokenizer, config, runner=scripted(tokenizer, text))) as server:
        chunks = [c.choices[0].text for c in client(server, key="unused").completions.create(
            model="stub", prompt="x", max_tokens=300, stream=True, stop=["nine ten one"])]
    assert "".join(chunks) == "one two three four five six seven eight "
    assert len([c for c in chunks if c]) >= 7  # pieces flow as generated, not in one block at the end


def test_a_saved_int4_model_loads_and_serves_like_its_own_generate(tmp_path):
    from lmforge.compress.quantization import driver as compress  # our own module: an ImportError fails the test
    from lmforge.compress.quantization.config import RTN
    from lmforge.compress.storage.serialize import save_quantized
    from lmforge.models import load_model, tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(seed=5)
    compress.quantize(model, RTN(bits=4, group_size=32))
    loaded, loaded_tokenizer = load_model(save_quantized(model, tokenizer, tmp_path / "int4"))
    assert any(type(m).__name__ == "QuantLinear" for m in loaded.modules())  # still packed after loading
    app = create_app(loaded, loaded_tokenizer, ServeConfig(model_name="int4"))
    prompts = ["The quick brown fox", "Science questions ask about plants"]  # different lengths: left padding
    answers = {}
    with ServerThread(app) as server:
        api = client(server, key="unused")

        def ask(prompt):
            answers[prompt] = api.completions.create(model="int4", prompt=prompt, max_tokens=6,
                                                     temperature=0).choices[0].text

        threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert max(app.state.ctx.scheduler.batch_sizes) == 2  # both were decoded in one left-padded batch
    for prompt, answer in answers.items():
        ids = loaded_tokenizer.encode(prompt, add_special_tokens=False)
        assert answer == greedy_reference(loaded, loaded_tokenizer, ids, 6).removesuffix("\ufffd")
