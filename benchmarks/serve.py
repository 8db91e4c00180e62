"""Bounded loopback load test of `lmforge serve`: p50 / p99 latency and throughput, fp32 and int4 SmolLM2.

    flock /tmp/lmforge-heavy.lock python benchmarks/serve.py [--clients 4 --requests 4 --max-tokens 32]

Each of ``--clients`` threads sends ``--requests`` completions one after another through the
official ``openai`` client (greedy, fixed max_tokens, guards on). Measured in the same run:

* the server with batching (up to 8 requests per batch, 5 ms window),
* the same server with batching off (max_batch_size=1): what the batching queue buys,
* the baseline: transformers ``generate`` at batch 1 on the same prompts, one after another, no HTTP.

The int4 model is RTN int4, symmetric, groups of 64 (lm_head and embeddings kept), the packed
format GPTQ writes too, so its serving speed stands for both; it is skipped if
``lmforge.compress`` is not installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def prompts(tokenizer, count: int, prompt_tokens: int) -> list[str]:
    from lmforge.data import load_corpus

    ids = tokenizer.encode(load_corpus("wikitext2").text(), add_special_tokens=False)
    return [tokenizer.decode(ids[i * 997: i * 997 + prompt_tokens]) for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(name: str, latencies: list[float], tokens: int, wall: float, errors: int) -> dict:
    return {"setting": name, "requests": len(latencies), "errors": errors, "completion_tokens": tokens,
            "wall_s": wall, "p50_s": percentile(latencies, 0.5), "p99_s": percentile(latencies, 0.99),
            "mean_s": statistics.mean(latencies), "tokens_per_s": tokens / wall, "requests_per_s": len(latencies) / wall}


def load_test(model, tokenizer, texts: list[str], clients: int, max_tokens: int, batch: int) -> dict:
    import openai

    from lmforge.serve import ServeConfig, ServerThread, create_app

    config = ServeConfig(model_name="bench", api_keys=("bench",), rate_per_minute=1e6, max_batch_size=batch)
    app = create_app(model, tokenizer, config)
    latencies, tokens, errors = [], [0], [0]
    lock = threading.Lock()
    per_client = [texts[i::clients] for i in range(clients)]
    with ServerThread(app) as server:
        api = openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0, timeout=600)
        api.completions.create(model="bench", prompt="warm up", max_tokens=2, temperature=0)

        def client(mine: list[str]) -> None:
            for text in mine:
                started = time.perf_counter()
                try:
                    done = api.completions.create(model="bench", prompt=text, max_tokens=max_tokens, temperature=0)
                except Exception:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    tokens[0] += done.usage.completion_tokens

        threads = [threading.Thread(target=client, args=(mine,)) for mine in per_client]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        sizes = dict(app.state.batcher.batch_sizes)
    result = summarize(f"lmforge serve, batch≤{batch}", latencies, tokens[0], wall, errors[0])
    result["batch_sizes"] = sizes
    return result


@torch.inference_mode()
def baseline(model, tokenizer, texts: list[str], max_tokens: int) -> dict:
    warm = torch.tensor([tokenizer.encode("warm up", add_special_tokens=False)])
    model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)
    latencies, tokens = [], 0
    started = time.perf_counter()
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        latencies.append(time.perf_counter() - t0)
        tokens += out.shape[1] - ids.shape[1]
    return summarize("baseline: generate, b1", latencies, tokens,
                     time.perf_counter() - started, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4, help="per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-int4", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lmforge.cli.common import print_table, save_json
    from lmforge.models import load_model, tensor_bytes

    model, tokenizer = load_model(args.model)
    texts = prompts(tokenizer, args.clients * args.requests, args.prompt_tokens)
    variants = [("fp32", lambda m: m)]
    if not args.no_int4:
        try:
            from lmforge.compress.config import RTN
            from lmforge.compress.quantize import quantize

            variants.append(("int4 g64", lambda m: (quantize(m, RTN(bits=4, group_size=64)), m)[1]))
        except ImportError:
            print("lmforge.compress not available: int4 skipped")
    results = []
    for name, prepare in variants:
        model = prepare(model)
        ram_mb = sum(tensor_bytes(model).values()) / 1e6
        for row in (baseline(model, tokenizer, texts, args.max_tokens),
                    load_test(model, tokenizer, texts, args.clients, args.max_tokens, batch=1),
                    load_test(model, tokenizer, texts, args.clients, args.max_tokens, batch=8)):
            results.append({"model": name, "model_ram_mb": ram_mb, **row})
            print(json.dumps(results[-1]), flush=True)
    print_table(f"serve load test: {args.clients} clients × {args.requests} requests, {args.prompt_tokens}-token "
                f"prompts, {args.max_tokens} new tokens, {args.threads} threads",
                ["model", "setting", "requests", "errors", "p50 s", "p99 s", "tokens/s", "requests/s"],
                [(r["model"], r["setting"], r["requests"], r["errors"], r["p50_s"], r["p99_s"], r["tokens_per_s"],
                  r["requests_per_s"]) for r in results])
    save_json(args.out, {"args": vars(args), "results": results, "torch": torch.__version__,
                         "host_cpus": torch.get_num_threads()})


if __name__ == "__main__":
    main()
