"""Issue 14's server faults: a request that fails fails alone; limits hold while reading; bad headers, keys
and values get their 4xx; a client that leaves is logged as such and its slot is freed."""

import socket
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from lmforge.errors import LmforgeError
from lmforge.serve import ServeConfig, ServerThread, create_app
from lmforge.serve import scheduler as scheduler_module
from lmforge.serve.usage import read_usage

KEY = "fault-key"
PROMPTS = ["The quick brown fox", "Science questions ask", "A language model predicts the next", "Rocks"]


def post(server, body, key=KEY, **kwargs):
    return httpx.post(f"{server.base_url}/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}, **kwargs)


def alone(server, prompt):
    return post(server, {"prompt": prompt, "max_tokens": 8, "temperature": 0}).json()["choices"][0]["text"]


@pytest.fixture
def served(tiny, tmp_path):
    model, tokenizer = tiny
    log = tmp_path / "usage.jsonl"
    app = create_app(model, tokenizer, ServeConfig(model_name="tiny", api_keys=(KEY,), usage_log=str(log),
                                                   rate_per_minute=100_000, max_request_bytes=4096))
    with ServerThread(app) as server:
        yield server, app, log


def at_once(calls):
    """Run the callables in threads released together; their results in order."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i):
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("bad", [{"seed": 2**70}, {"max_tokens": 0}, {"max_tokens": True}, {"max_tokens": -3},
                                 {"max_tokens": 2.5}, {"n": 0}, {"stop": ["a", "b", "c", "d", "e"]},
                                 {"temperature": "hot"}, {"logit_bias": {"x": 1}}, {"logit_bias": {"99999": 1}},
                                 {"prompt": [[1, 2], [99999]]}, {"suffix": "!"}])
def test_a_malformed_request_in_a_batch_fails_alone(served, bad):
    server, _, _ = served
    expected = [alone(server, p) for p in PROMPTS]
    calls = [lambda p=p: post(server, {"prompt": p, "max_tokens": 8, "temperature": 0}) for p in PROMPTS]
    calls.insert(2, lambda: post(server, {"prompt": "hi", "max_tokens": 8, **bad}))
    replies = at_once(calls)
    assert replies[2].status_code == 400 and "error" in replies[2].json()
    good = replies[:2] + replies[3:]
    assert [r.status_code for r in good] == [200] * 4
    assert [r.json()["choices"][0]["text"] for r in good] == expected


def test_an_error_inside_the_batch_is_attributed_to_its_request(served, monkeypatch):
    server, app, log = served
    expected = [alone(server, p) for p in PROMPTS]
    real = scheduler_module.choose_token

    def faulty(logits, params, seen, generator, allowed=None):
        if params.seed == 13 and len(seen) == 2:  # the third token of that one request
            raise ValueError("bad row")
        return real(logits, params, seen, generator, allowed)

    monkeypatch.setattr(scheduler_module, "choose_token", faulty)
    calls = [lambda p=p: post(server, {"prompt": p, "max_tokens": 8, "temperature": 0}) for p in PROMPTS]
    calls.append(lambda: post(server, {"prompt": "hi", "max_tokens": 8, "temperature": 0, "seed": 13}))
    replies = at_once(calls)
    assert replies[-1].status_code == 500 and "bad row" in replies[-1].json()["error"]["message"]
    assert [r.json()["choices"][0]["text"] for r in replies[:-1]] == expected
    assert app.state.ctx.scheduler.running == []


def raw_request(server, head: bytes, body_chunks=(), read_after=0):
    """Send a request by hand (chunked bodies, raw header bytes); the status line that comes back."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        for chunk in body_chunks:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed: it stopped reading
                break
            sent += len(chunk)
            if read_after and sent >= read_after:
                break
        return sock.recv(65536).split(b"\r\n")[0], sent


def test_a_chunked_body_is_cut_off_at_the_limit_while_it_is_read(served):
    server, _, log = served
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
            b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    # 8 KB sent of a body that would go on: the limit is 4096, so the answer comes before the rest is sent.
    status, sent = raw_request(server, head, [b"x" * 1024] * 8, read_after=8 * 1024)
    assert b"413" in status and sent == 8 * 1024
    declared = post(server, {"prompt": "x" * 5000, "max_tokens": 2})
    assert declared.status_code == 413 and "over the limit" in declared.json()["error"]["message"]
    assert [line["status"] for line in read_usage(log)][-2:] == [413, 413]


def test_headers_that_are_not_ascii_get_400_or_401(served):
    server, _, _ = served
    bad_key = httpx.post(f"{server.base_url}/completions", json={"prompt": "x"},
                         headers={"Authorization": "Bearer kéy".encode("latin-1")})
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "invalid_api_key"
    bad_header = httpx.post(f"{server.base_url}/completions", json={"prompt": "x", "max_tokens": 2},
                            headers={"Authorization": f"Bearer {KEY}", "X-Note": "caf\xe9".encode("latin-1")})
    assert bad_header.status_code == 400 and "x-note" in bad_header.json()["error"]["message"]


def test_wrong_keys_from_one_address_are_rate_limited(tiny):
    model, tokenizer = tiny
    config = ServeConfig(model_name="tiny", api_keys=(KEY,), auth_failures_per_minute=5)
    with ServerThread(create_app(model, tokenizer, config)) as server:
        statuses = [post(server, {"prompt": "x", "max_tokens": 1}, key=f"guess-{i}").status_code for i in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        locked = post(server, {"prompt": "x", "max_tokens": 1}, key="guess-9")
        assert int(locked.headers["retry-after"]) >= 1


def test_server_options_are_checked_before_anything_loads(tiny_folder):
    from lmforge.cli.main import app

    for config, option in [(ServeConfig(rate_per_minute=0), "--rate"), (ServeConfig(rate_per_minute=-1), "--rate"),
                           (ServeConfig(max_concurrent=0), "--max-concurrent"),
                           (ServeConfig(max_queued=-1), "--max-queued"), (ServeConfig(rate_burst=0), "--burst")]:
        with pytest.raises(LmforgeError, match=option):
            config.check()
    for args in (["--port", "99999"], ["--port", "0"], ["--rate", "0"]):
        result = CliRunner().invoke(app, ["serve", str(tiny_folder), *args])  # main() prints it as one line
        assert isinstance(result.exception, LmforgeError) and args[0] in str(result.exception)


def test_a_client_that_leaves_mid_stream_is_logged_with_the_tokens_it_got_and_frees_its_slot(served):
    server, app, log = served
    received = 0
    with httpx.stream("POST", f"{server.base_url}/completions", timeout=60, headers={"Authorization": f"Bearer {KEY}"},
                      json={"prompt": "The quick", "max_tokens": 120, "temperature": 0, "stream": True}) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received == 4:
                break
    deadline = time.monotonic() + 10
    while (app.state.ctx.scheduler.running or not log.exists() or not read_usage(log)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.ctx.scheduler.running == []  # its row left the batch
    (line,) = read_usage(log)
    assert line["status"] == 499 and line["disconnected"] is True
    assert 1 <= line["completion_tokens"] <= line["tokens_generated"] < 120  # what it got, not 0 and not all
