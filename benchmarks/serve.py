"""Loopback load test: `lmforge serve` (fp32, packed int4 + int8 head) against llama-cpp-python's OpenAI server,
and a soak of `lmforge serve` with faults mixed in.

Both servers run as their own processes (whole-process timing for both), 2 threads each, on the same
weights: SmolLM2-135M-Instruct as fp32, its RTN int4 (symmetric, groups of 64) with an int8 output
head as lmforge's packed folder, and the very same codes exported to GGUF (Q4_0 layers, Q8_0 head)
for llama.cpp (``python -m llama_cpp.server`` from /work/main/.venv-llama). Clients stream
``/v1/completions`` (greedy) with 64-token prompts from WikiText-2 and 64-128 new tokens (seeded),
``--clients`` of them at once, each sending its share of ``--requests`` one after another, with a
``--max-seconds`` cap per setting. Output tokens are counted by re-tokenizing the streamed text with
the model's tokenizer, the same rule for both servers. lmforge keeps its guards on (filter, PII
redaction): that is how it serves.

The soak: ``--soak-clients`` clients for ``--soak-seconds`` against the int4 lmforge server, each
request drawn from: streaming, non-streaming, a stream the client drops after a few events, an
oversized body, malformed JSON. At the end: every well-formed request answered, the scheduler's
running and queued counts (leaked slots), and the server's RSS before and after.

    flock /tmp/lmforge-heavy.lock nice env LMFORGE_DATA_DIR=/work/shared/data PYTHONPATH=src:benchmarks \\
        .venv/bin/python benchmarks/serve.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from provenance import provenance

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """A server process on a free loopback port, stopped on exit."""

    def __init__(self, command: list[str], port: int, env: dict[str, str]):
        self.port, self.command = port, command
        # A file, not a pipe: llama.cpp logs enough while loading to fill a pipe nobody reads and block.
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 300) -> "Server":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}: {self.log_tail()[-600:]}")
            try:
                if httpx.get(f"{self.base}/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"did not start: {self.log_tail()[-600:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def lmforge_server(model: str, threads: int, max_concurrent: int) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    return Server([sys.executable, "-m", "lmforge.cli.main", "serve", model, "--port", str(port), "--name", "bench",
                   "--rate", "1000000", "--usage-log", "off", "--max-concurrent", str(max_concurrent),
                   "--max-queued", "256"], port, env)


# llama.cpp's server on its plain CPU buffers (see llama_cpp_plain.py; note it beside its numbers).
LLAMA_SHIM = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from llama_cpp_plain import use_plain_cpu_buffers
use_plain_cpu_buffers()
from llama_cpp.server.__main__ import main
sys.argv[0] = "llama_cpp.server"
main()
"""


def llama_server(python: str, gguf: Path, threads: int) -> Server:
    port = free_port()
    return Server([python, "-c", LLAMA_SHIM, "--model", str(gguf),
                   "--model_alias", "bench", "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads),
                   "--n_threads_batch", str(threads), "--n_ctx", "2048",
                   # queue concurrent requests instead of cutting the running stream off (its default)
                   "--interrupt_requests", "False"], port, dict(os.environ))


async def stream_one(client: httpx.AsyncClient, base: str, prompt: str, max_tokens: int) -> tuple[float, float, str]:
    """(time to first text, latency, text) of one streamed greedy completion."""
    started = time.perf_counter()
    first, text = None, []
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", f"{base}/v1/completions", json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"status {reply.status_code}")
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            piece = event["choices"][0].get("text") or "" if event.get("choices") else ""
            if piece and first is None:
                first = time.perf_counter() - started
            text.append(piece)
    latency = time.perf_counter() - started
    return (first if first is not None else latency), latency, "".join(text)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def load(base: str, prompts: list[str], budgets: list[int], clients: int, max_seconds: float,
               tokenizer) -> dict:
    ttfts, latencies, tokens, errors = [], [], 0, []
    queue = list(zip(prompts, budgets))
    deadline = time.monotonic() + max_seconds

    async def worker(client):
        nonlocal tokens
        while queue and time.monotonic() < deadline:
            prompt, budget = queue.pop(0)
            try:
                ttft, latency, text = await stream_one(client, base, prompt, budget)
            except Exception as exc:  # counted, and named in the results
                errors.append(repr(exc)[:200])
                continue
            ttfts.append(ttft)
            latencies.append(latency)
            tokens += len(tokenizer.encode(text, add_special_tokens=False))

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "error_samples": errors[:3],
            "unsent": len(queue), "wall_s": wall, "requests_per_s": len(latencies) / wall,
            "output_tokens": tokens, "output_tokens_per_s": tokens / wall,
            "ttft_p50_s": percentile(ttfts, 0.5), "ttft_p99_s": percentile(ttfts, 0.99),
            "latency_p50_s": percentile(latencies, 0.5), "latency_p99_s": percentile(latencies, 0.99)}


async def soak(server: Server, prompts: list[str], clients: int, seconds: float, max_request_bytes: int) -> dict:
    """Mixed traffic with faults for ``seconds``; counts by kind and what came back."""
    rng = random.Random(0)
    kinds = ["stream"] * 4 + ["plain"] * 3 + ["drop"] * 2 + ["oversized", "malformed"]
    sent = {k: 0 for k in set(kinds)}
    answered = {k: 0 for k in set(kinds)}
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    async def one(client, kind: str) -> None:
        prompt = rng.choice(prompts)
        body = {"model": "bench", "prompt": prompt, "max_tokens": rng.randint(16, 64), "temperature": 0.7,
                "seed": rng.randint(0, 1000)}
        url = f"{server.base}/v1/completions"
        if kind == "oversized":
            reply = await client.post(url, content=b'{"prompt": "' + b"x" * (max_request_bytes + 10) + b'"}',
                                      headers={"content-type": "application/json"})
            ok = reply.status_code == 413
        elif kind == "malformed":
            reply = await client.post(url, content=b'{"prompt": "unterminated', headers={"content-type": "application/json"})
            ok = reply.status_code in (400, 422)
        elif kind == "plain":
            reply = await client.post(url, json=body)
            ok = reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] in ("stop", "length")
        else:
            events = 0
            async with client.stream("POST", url, json={**body, "stream": True}) as reply:
                async for line in reply.aiter_lines():
                    events += line.startswith("data: ")
                    if kind == "drop" and events >= 3:
                        break  # leaving the block closes the connection mid-stream
            ok = reply.status_code == 200 and (kind == "drop" or events > 1)
        answered[kind] += ok
        if not ok:
            failures.append(f"{kind}: {reply.status_code}")

    async def worker(client):
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            sent[kind] += 1
            try:
                await one(client, kind)
            except Exception as exc:  # a well-formed request that got no answer is a failure of the soak
                failures.append(f"{kind}: {exc!r}"[:200])

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients + 4)) as client:
        before = rss_mb(server.process.pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - started
        await asyncio.sleep(2)  # dropped streams leave the batch at the next step
        health = (await client.get(f"{server.base}/health")).json()
    after = rss_mb(server.process.pid)
    well_formed = [k for k in ("stream", "plain")]
    return {"clients": clients, "seconds": wall, "sent": sent, "answered_as_expected": answered,
            "well_formed_sent": sum(sent[k] for k in well_formed),
            "well_formed_answered": sum(answered[k] for k in well_formed),
            "failures": len(failures), "failure_samples": failures[:5],
            "leaked_running": health["running"], "leaked_queued": health["queued"],
            "rss_mb_before": before, "rss_mb_after": after, "rss_change_pct": 100 * (after - before) / before}


def prepare_models(work: Path, model_name: str) -> dict[str, Path]:
    """The fp32 zoo folder, lmforge's packed int4 + int8 head folder, and the same codes as GGUF."""
    from lmforge.compress import RTN, quantize, save_quantized
    from lmforge.compress.export.gguf import export_gguf
    from lmforge.models import load_model, zoo_path

    model, tokenizer = load_model(model_name)
    quantize(model, RTN(bits=4, group_size=64, symmetric=True, lm_head_bits=8))
    folder = save_quantized(model, tokenizer, work / "int4-head8")
    gguf = export_gguf(model, tokenizer, work / "int4-head8.gguf").path
    return {"fp32": zoo_path(model_name), "int4": folder, "gguf": gguf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", default="4,16,32", help="requests per setting, one per --clients entry")
    parser.add_argument("--max-seconds", type=float, default=180, help="cap per setting")
    parser.add_argument("--servers", default="lmforge-fp32,lmforge-int4,llama.cpp")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--soak-seconds", type=float, default=30)
    parser.add_argument("--soak-clients", type=int, default=32)
    parser.add_argument("--llama-python", default=str(ROOT / ".venv-llama" / "bin" / "python"),
                        help="python of the llama-cpp-python venv (the peer)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from lmforge.cli.common import print_table, save_json
    from lmforge.data import load_corpus
    from lmforge.models import zoo_path

    tokenizer = AutoTokenizer.from_pretrained(zoo_path(args.model))
    corpus = load_corpus("wikitext2")
    ids = tokenizer.encode(corpus.text(), add_special_tokens=False)
    rng = random.Random(0)
    total = max(int(n) for n in args.requests.split(","))
    prompts = [tokenizer.decode(ids[i * 997: i * 997 + 64]) for i in range(total)]
    budgets = [rng.randint(64, 128) for _ in range(total)]
    levels = list(zip(map(int, args.clients.split(",")), map(int, args.requests.split(","))))

    rows, results = [], {"load": [], "soak": None}
    with tempfile.TemporaryDirectory() as work:
        paths = prepare_models(Path(work), args.model)
        starts = {"lmforge-fp32": lambda: lmforge_server(str(paths["fp32"]), args.threads, 32),
                  "lmforge-int4": lambda: lmforge_server(str(paths["int4"]), args.threads, 32),
                  "llama.cpp": lambda: llama_server(args.llama_python, paths["gguf"], args.threads)}
        for name in args.servers.split(","):
            server = starts[name]()
            try:
                server.wait_ready()
            except RuntimeError as exc:  # recorded as the server's row; the others still run
                results["load"].append({"server": name, "error": str(exc)})
                print(f"{name}: {exc}", flush=True)
                continue
            try:
                asyncio.run(load(server.base, prompts[:2], [8, 8], 2, 60, tokenizer))  # warm-up, not counted
                for clients, count in levels:
                    row = asyncio.run(load(server.base, prompts[:count], budgets[:count], clients, args.max_seconds,
                                           tokenizer))
                    row = {"server": name, **row}
                    results["load"].append(row)
                    print(json.dumps(row), flush=True)
                    rows.append((name, clients, row["requests"], row["errors"], row["output_tokens_per_s"],
                                 row["requests_per_s"], row["ttft_p50_s"], row["ttft_p99_s"], row["latency_p50_s"],
                                 row["latency_p99_s"]))
                if name == "lmforge-int4" and args.soak_seconds > 0:
                    results["soak"] = asyncio.run(soak(server, prompts, args.soak_clients, args.soak_seconds, 64 * 1024))
                    print(json.dumps(results["soak"]), flush=True)
            finally:
                server.stop()
        results["provenance"] = provenance(models=[paths["fp32"], paths["int4"], paths["gguf"]], data=[corpus.source],
                                           peers={"llama-cpp-python": (args.llama_python, "llama_cpp_python")})
    results["args"] = vars(args)
    print_table(f"streaming completions, 64-token prompts, 64-128 new tokens, {args.threads} threads per server",
                ["server", "clients", "requests", "errors", "out tok/s", "req/s", "TTFT p50", "TTFT p99",
                 "latency p50", "latency p99"], rows)
    if results["soak"]:
        s = results["soak"]
        print_table(f"soak: {s['clients']} clients, {s['seconds']:.0f} s", ["sent", "well-formed answered",
                    "failures", "leaked running/queued", "RSS before → after MB"],
                    [(sum(s["sent"].values()), f"{s['well_formed_answered']}/{s['well_formed_sent']}", s["failures"],
                      f"{s['leaked_running']}/{s['leaked_queued']}",
                      f"{s['rss_mb_before']:.0f} → {s['rss_mb_after']:.0f} ({s['rss_change_pct']:+.1f} %)")])
    save_json(args.out, results)


if __name__ == "__main__":
    main()
