"""Bounded loopback load test of `lmforge serve`: p50 / p99 latency and throughput, fp32 and int4 SmolLM2.

    flock /tmp/lmforge-heavy.lock python benchmarks/serve.py [--clients 4 --requests 4 --max-tokens 32]

``--requests`` rounds; in each, ``--clients`` threads send one completion at once through the official
``openai`` client (greedy, fixed max_tokens, guards on). Each round runs, one after the other:

* the baseline: transformers ``generate`` at batch 1 on the same prompts, one after another, no HTTP,
* the server with batching off (max_batch_size=1),
* the same server with batching (up to 8 requests per batch, 5 ms window): what the batching queue buys.

Interleaving the three settings round by round spreads any change in machine load over all of them.

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


class Tally:
    """Latencies, tokens and busy time of one setting, summed over the rounds."""

    def __init__(self, name: str):
        self.name, self.latencies, self.tokens, self.wall, self.errors = name, [], 0, 0.0, 0
        self.lock = threading.Lock()

    def summary(self) -> dict:
        return {"setting": self.name, "requests": len(self.latencies), "errors": self.errors,
                "completion_tokens": self.tokens, "wall_s": self.wall, "p50_s": percentile(self.latencies, 0.5),
                "p99_s": percentile(self.latencies, 0.99), "mean_s": statistics.mean(self.latencies),
                "tokens_per_s": self.tokens / self.wall, "requests_per_s": len(self.latencies) / self.wall}


def serve_round(api, texts: list[str], max_tokens: int, tally: Tally) -> None:
    """One request per client, all at once."""

    def client(text: str) -> None:
        started = time.perf_counter()
        try:
            done = api.completions.create(model="bench", prompt=text, max_tokens=max_tokens, temperature=0)
        except Exception:
            with tally.lock:
                tally.errors += 1
            return
        with tally.lock:
            tally.latencies.append(time.perf_counter() - started)
            tally.tokens += done.usage.completion_tokens

    threads = [threading.Thread(target=client, args=(text,)) for text in texts]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.wall += time.perf_counter() - started


@torch.inference_mode()
def generate_round(model, tokenizer, texts: list[str], max_tokens: int, tally: Tally) -> None:
    """The same requests through transformers' generate, one after another (no server, no batching)."""
    started = time.perf_counter()
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        tally.latencies.append(time.perf_counter() - t0)
        tally.tokens += out.shape[1] - ids.shape[1]
    tally.wall += time.perf_counter() - started


def measure(model, tokenizer, texts: list[str], clients: int, max_tokens: int) -> list[dict]:
    """Rounds of `clients` requests; each round runs the baseline, then the server unbatched, then batched,
    so a change in machine load during the run falls on all three alike."""
    import openai

    from lmforge.serve import ServeConfig, ServerThread, create_app

    apps = {batch: create_app(model, tokenizer, ServeConfig(model_name="bench", api_keys=("bench",),
                                                            rate_per_minute=1e6, max_batch_size=batch))
            for batch in (1, 8)}
    tallies = {"generate": Tally("generate b1 (baseline)"), 1: Tally("serve batch≤1"),
               8: Tally("serve batch≤8")}
    with ServerThread(apps[1]) as unbatched, ServerThread(apps[8]) as batched:
        apis = {batch: openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0, timeout=600)
                for batch, server in ((1, unbatched), (8, batched))}
        for api in apis.values():
            api.completions.create(model="bench", prompt="warm up", max_tokens=2, temperature=0)
        generate_round(model, tokenizer, ["warm up"], 2, Tally("warm-up"))
        for start in range(0, len(texts), clients):
            chunk = texts[start:start + clients]
            generate_round(model, tokenizer, chunk, max_tokens, tallies["generate"])
            for batch, api in apis.items():
                serve_round(api, chunk, max_tokens, tallies[batch])
        results = [tally.summary() for tally in tallies.values()]
        for batch, row in zip((1, 8), results[1:]):
            row["batch_sizes"] = dict(apps[batch].state.batcher.batch_sizes)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4, help="per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-int4", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lmforge.cli.common import console, print_table
    from lmforge.paths import data_dir
    from provenance import save_result
    from lmforge.models import load_model, tensor_bytes

    console.width = max(console.width, 120)  # one line per row, also when the output goes to a log file

    model, tokenizer = load_model(args.model)
    texts = prompts(tokenizer, args.clients * args.requests, args.prompt_tokens)
    variants = [("fp32", lambda m: m)]
    if not args.no_int4:
        try:
            from lmforge.compress.quantization.config import RTN
            from lmforge.compress.quantization.driver import quantize

            variants.append(("int4 g64", lambda m: (quantize(m, RTN(bits=4, group_size=64)), m)[1]))
        except ImportError:
            print("lmforge.compress not available: int4 skipped")
    results = []
    for name, prepare in variants:
        model = prepare(model)
        ram_mb = sum(tensor_bytes(model).values()) / 1e6
        for row in measure(model, tokenizer, texts, args.clients, args.max_tokens):
            results.append({"model": name, "model_ram_mb": ram_mb, **row})
            print(json.dumps(results[-1]), flush=True)
    print_table(f"serve load test: {args.clients} clients × {args.requests} requests, {args.prompt_tokens}-token "
                f"prompts, {args.max_tokens} new tokens, {args.threads} threads",
                ["model", "setting", "requests", "errors", "p50 s", "p99 s", "tokens/s", "requests/s"],
                [(r["model"], r["setting"], r["requests"], r["errors"], r["p50_s"], r["p99_s"], r["tokens_per_s"],
                  r["requests_per_s"]) for r in results])
    save_result(args.out, {"args": vars(args), "results": results},
                models=[args.model], data=[data_dir() / "wikitext2" / "wiki.test.raw"])


if __name__ == "__main__":
    main()
