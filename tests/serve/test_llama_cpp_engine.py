"""`lmforge serve MODEL.gguf` on llama.cpp in process: the same answers as the torch engine on the same file,
batching and copies on llama.cpp sequences, freed KV cells, and the guardrails unchanged.

The GGUF is the tiny llama written as F32 by lmforge's own exporter; the torch reference is that file loaded
back by transformers (``load_model``), so both engines compute the same weights.
"""

import json
import threading
import time

import httpx
import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.serve import ServeConfig, ServerThread, create_app
from lmforge.serve.engine import choose_engine, gguf_tokenizer, load_engine

KEY = "k"
PROMPTS = ["The quick brown fox", "Hello there, my friend", "Once upon a time", "A B C D E F"]


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    from lmforge.compress.export.gguf import export_gguf
    from lmforge.models import tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(seed=0, context_length=256)
    return export_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.gguf", "F32").path


@pytest.fixture
def llama_cpp(optional):
    return optional("llama_cpp", "llama")


LOADED = {}  # one llama.cpp engine per file for the module (the `optional` check is per test)


@pytest.fixture
def engine(llama_cpp, gguf_file):
    if gguf_file not in LOADED:
        LOADED[gguf_file] = load_engine(str(gguf_file), "llama.cpp", max_concurrent=4, threads=1)
    return LOADED[gguf_file]


@pytest.fixture(scope="module")
def reference(gguf_file):
    from lmforge.models import load_model

    return load_model(str(gguf_file))


def serve_app(engine, **config):
    config = {"model_name": "tiny", "api_keys": (KEY,), "rate_per_minute": 100_000, **config}
    engine.runner.reset()
    return create_app(engine.model, engine.tokenizer, ServeConfig(**config), runner=engine.runner)


def complete(base, prompt, max_tokens=24, **extra):
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}
    reply = httpx.post(f"{base}/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def stream(base, prompt, max_tokens=24):
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    pieces = []
    with httpx.stream("POST", f"{base}/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                pieces += [c.get("text") or "" for c in event.get("choices", [])]
    return "".join(pieces)


def test_the_engine_is_chosen_from_the_file_and_mismatches_fail_in_one_line(llama_cpp, gguf_file, tmp_path):
    assert choose_engine(str(gguf_file), "auto") == "llama.cpp"
    assert choose_engine(str(gguf_file), "torch") == "torch"
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LmforgeError, match="runs .gguf files"):
        choose_engine(str(tmp_path), "llama.cpp")
    with pytest.raises(LmforgeError, match="unknown engine"):
        choose_engine(str(gguf_file), "vllm")


def test_llama_cpp_missing_names_the_extra(gguf_file, monkeypatch):
    import lmforge.serve.engine as engine_module

    monkeypatch.setattr(engine_module, "llama_cpp_version", lambda: None)
    assert engine_module.choose_engine(str(gguf_file), "auto") == "torch"
    with pytest.raises(LmforgeError, match=r"pip install 'lmforge\[llama\]'"):
        engine_module.choose_engine(str(gguf_file), "llama.cpp")


def test_the_gguf_tokenizer_matches_llama_cpps_own(engine, gguf_file):
    tokenizer = gguf_tokenizer(gguf_file)
    for text in [*PROMPTS, "  spaces  and\nnewlines", "numbers 12345 and punctuation!?"]:
        assert tokenizer.encode(text, add_special_tokens=False) == engine.runner.tokenize(text), text


def test_prefill_and_decode_logits_are_the_torch_models(engine, reference):
    model, tokenizer = reference
    runner = engine.runner
    runner.reset()
    ids = tokenizer.encode(PROMPTS[0], add_special_tokens=False)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].float()
    prefilled = runner.prefill(ids, all_logits=True)
    assert prefilled.shape == expected.shape
    assert float((prefilled - expected).abs().max()) < 1e-3 * float(expected.abs().max()) + 1e-3
    generated, last = list(ids), prefilled[-1]
    for _ in range(6):  # decode steps against full forwards of the growing sequence
        generated.append(int(last.argmax()))
        step = runner.decode([generated[-1]])
        last = step[0]
        with torch.no_grad():
            want = model(torch.tensor([generated])).logits[0, -1].float()
        assert float((step[0] - want).abs().max()) < 1e-3 * float(want.abs().max()) + 1e-3
    runner.retire([0])
    assert runner.rows == 0


def test_greedy_completions_equal_the_torch_engine(engine, reference):
    model, tokenizer = reference
    torch_app = create_app(model, tokenizer, ServeConfig(model_name="tiny", api_keys=(KEY,), rate_per_minute=100_000))
    with ServerThread(torch_app) as server:
        expected = [complete(server.base_url, p)["choices"][0]["text"] for p in PROMPTS]
    with ServerThread(serve_app(engine)) as server:
        got = [complete(server.base_url, p)["choices"][0]["text"] for p in PROMPTS]
    assert got == expected and any(expected)


def test_concurrent_streams_each_equal_their_solo_output(engine):
    with ServerThread(serve_app(engine)) as server:
        solo = [stream(server.base_url, p, 16 + 8 * i) for i, p in enumerate(PROMPTS)]
        together = [None] * len(PROMPTS)

        def run(i):
            together[i] = stream(server.base_url, PROMPTS[i], 16 + 8 * i)

        scheduler = server.server.config.app.state.ctx.scheduler
        gate = threading.Event()
        scheduler.run_job(lambda: gate.wait(30))  # hold the compute thread until all four are queued
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while scheduler.queued < len(PROMPTS) and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for t in threads:
            t.join()
    assert together == solo
    assert {4, 3, 2, 1} <= set(scheduler.batch_sizes)  # the rows ran together and left at different lengths


def test_two_copies_of_one_prompt(engine):
    with ServerThread(serve_app(engine)) as server:
        alone = complete(server.base_url, PROMPTS[1])["choices"][0]["text"]
        both = complete(server.base_url, PROMPTS[1], n=2)["choices"]
        sampled = complete(server.base_url, PROMPTS[1], n=2, temperature=1.0, seed=7)["choices"]
    assert [c["text"] for c in both] == [alone, alone]
    assert len(sampled) == 2 and engine.runner.rows == 0


def test_retired_rows_free_their_kv_cells(llama_cpp, gguf_file):
    small = load_engine(str(gguf_file), "llama.cpp", max_concurrent=2, threads=1, context=64)
    with ServerThread(serve_app(small, max_tokens_limit=32)) as server:
        for i in range(12):  # 12 × ~45 tokens, far beyond the cache's 2 × 64 cells
            answer = complete(server.base_url, PROMPTS[i % 4], max_tokens=32)["choices"][0]
            assert answer["finish_reason"] in ("length", "stop")
    assert small.runner.rows == 0 and sorted(small.runner.free) == [0, 1]
    with pytest.raises(LmforgeError, match="context here holds 64"):
        small.runner.prefill(list(range(3, 70)))
    with pytest.raises(LmforgeError, match="outside the model's vocabulary"):
        small.runner.prefill([small.runner.n_vocab + 5])
    assert small.runner.rows == 0 and len(small.runner.free) == 2


def test_guardrails_apply_on_llama_cpp(engine, tmp_path):
    log = tmp_path / "usage.jsonl"
    schema = {"type": "object", "properties": {"contact": {"const": "jane.doe@example.com"}}, "required": ["contact"]}
    with ServerThread(serve_app(engine, usage_log=str(log))) as server:
        anonymous = httpx.post(f"{server.base_url}/completions", json={"model": "tiny", "prompt": "hi"}, timeout=60)
        # constrained decoding (lmforge's, on llama.cpp's logits) makes the model write an address
        reply = complete(server.base_url, "contact?", max_tokens=60,
                         response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert anonymous.status_code == 401
    text = reply["choices"][0]["text"]
    assert "jane.doe" not in text and "<EMAIL>" in text
    assert [json.loads(line)["pii_redacted"] for line in log.read_text().splitlines()][-1] == {"EMAIL": 1}


def test_serve_command_runs_a_gguf_on_llama_cpp_and_names_the_engine(llama_cpp, gguf_file, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from lmforge.cli.main import app

    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    served = {}

    def run_in_thread(asgi_app, host, port, log_level):  # stands in for uvicorn.run's blocking loop
        served["runner"] = type(asgi_app.state.ctx.runner).__name__
        with ServerThread(asgi_app) as server:
            served["reply"] = complete(server.base_url, PROMPTS[2], max_tokens=4)

    monkeypatch.setattr(uvicorn, "run", run_in_thread)
    threads = torch.get_num_threads()
    result = CliRunner().invoke(app, ["serve", str(gguf_file), "--api-key", KEY, "--name", "tiny", "--threads", "1"])
    assert torch.get_num_threads() == 1  # torch only samples beside llama.cpp
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert served["runner"] == "LlamaCppRunner" and "with llama.cpp (llama-cpp-python" in result.output
    assert served["reply"]["choices"][0]["finish_reason"] in ("length", "stop")
    info = CliRunner().invoke(app, ["models", "info", str(gguf_file)])
    assert info.exit_code == 0 and "llama.cpp (llama-cpp-python" in info.output, info.output
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{}")
    refused = CliRunner().invoke(app, ["serve", str(tmp_path / "folder"), "--engine", "llama.cpp"])
    assert refused.exit_code != 0 and "runs .gguf files" in str(refused.exception or refused.output)
