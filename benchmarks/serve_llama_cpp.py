"""Batch-1 greedy decode speed of `lmforge serve --engine llama.cpp` against llama-cpp-python, same GGUF, same run.

Three rows on the same file (default: the offline zoo entry's own Q4_1 GGUF of SmolLM2-135M-Instruct), 2 threads:

* ``lmforge serve --engine llama.cpp``: its own process, streaming ``/v1/completions`` over loopback, guards on
  (filter, PII redaction) as it serves;
* llama-cpp-python's OpenAI server (``python -m llama_cpp.server`` from the llama venv, on llama.cpp's plain CPU
  buffers through ``serve.py``'s shim), the same requests;
* llama-cpp-python in process alone (``Llama.generate``, timed by its own clock): no HTTP at all.

The prompt is the first ``--prompt-tokens`` tokens of WikiText-2; every request asks for ``--new-tokens``
greedy tokens. Every row is timed as ``decode.py`` times tools: ``t_1``, the time to one token (prefill + first
token), and ``t_new``, the time to all of them; decode tokens/s is ``(tokens - 1) / (t_new - t_1)``, medians over
``--repeats`` after a warm-up. For the servers both are client-side latencies of whole streamed requests (so
lmforge's held-back text for PII screening costs nothing it does not really cost), tokens counted by
re-tokenizing the streamed text with the GGUF's tokenizer, the same rule for both. Each server runs alone
(the other is stopped first).

    flock /tmp/lmforge-heavy.lock nice env LMFORGE_DATA_DIR=/work/shared/data PYTHONPATH=src:benchmarks \\
        .venv/bin/python benchmarks/serve_llama_cpp.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

from llama_cpp_timing import time_llama_generate
from provenance import save_result
from serve import Server, free_port, llama_server

ROOT = Path(__file__).resolve().parents[1]
LLAMA_GREEDY = {"repeat_penalty": 1.0}  # llama-cpp-python's server penalises repeats (1.1) unless told not to


def default_llama_python() -> str:
    for root in (ROOT, Path("/work/main")):
        if (python := root / ".venv-llama" / "bin" / "python").exists():
            return str(python)
    return str(ROOT / ".venv-llama" / "bin" / "python")


def lmforge_llama_server(gguf: Path, threads: int) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    return Server([sys.executable, "-m", "lmforge.cli.main", "serve", str(gguf), "--engine", "llama.cpp",
                   "--threads", str(threads), "--port", str(port), "--name", "bench", "--rate", "1000000",
                   "--usage-log", "off", "--max-concurrent", "4"], port, env)


def stream_timed(base: str, prompt: str, max_tokens: int, extra: dict | None = None) -> tuple[float, str]:
    """Latency (request sent to stream closed) and the whole text of one streamed greedy completion."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            **(extra or {})}
    text, started = [], time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=600) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"status {reply.status_code}: {reply.read()[:300]!r}")
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            text.append((event["choices"][0].get("text") or "") if event.get("choices") else "")
    return time.perf_counter() - started, "".join(text)


def server_row(name: str, server: Server, prompt: str, new_tokens: int, repeats: int, tokenizer,
               extra: dict | None = None) -> dict:
    try:
        server.wait_ready()
        stream_timed(server.base, prompt, 8, extra)  # warm-up, not counted
        firsts = [stream_timed(server.base, prompt, 1, extra)[0] for _ in range(repeats)]
        fulls = [stream_timed(server.base, prompt, new_tokens, extra) for _ in range(repeats)]
    finally:
        server.stop()
    t_1, t_new = statistics.median(firsts), statistics.median(t for t, _ in fulls)
    tokens = len(tokenizer.encode(fulls[0][1], add_special_tokens=False))
    return {"tool": name, "decode_tokens_per_s": (tokens - 1) / (t_new - t_1), "tokens": tokens, "t_1": t_1,
            "t_new": t_new, "runs_t_new": [t for t, _ in fulls], "text": fulls[0][1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1", help="zoo name whose GGUF is used")
    parser.add_argument("--gguf", help="the GGUF (default: the zoo entry's own)")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-python", default=default_llama_python())
    parser.add_argument("--out", default="benchmarks/results/serve_llama_cpp.json")
    args = parser.parse_args()

    from lmforge.cli.common import print_table
    from lmforge.data import load_corpus
    from lmforge.models import pull, read_metadata
    from lmforge.paths import data_dir
    from lmforge.serve.engine import gguf_tokenizer

    gguf = Path(args.gguf or read_metadata(pull(args.model))["gguf"])
    tokenizer = gguf_tokenizer(gguf)
    ids = tokenizer(load_corpus("wikitext2").text()[:20_000], add_special_tokens=False)["input_ids"][: args.prompt_tokens]
    prompt = tokenizer.decode(ids)
    ids = tokenizer.encode(prompt, add_special_tokens=False)  # what both servers see
    n = args.new_tokens
    rows = [server_row("lmforge serve --engine llama.cpp (HTTP stream)", lmforge_llama_server(gguf, args.threads),
                       prompt, n, args.repeats, tokenizer),
            server_row("llama-cpp-python server (HTTP stream)", llama_server(args.llama_python, gguf, args.threads),
                       prompt, n, args.repeats, tokenizer, LLAMA_GREEDY)]
    alone = time_llama_generate(args.llama_python, gguf, args.threads, n, args.repeats, ids)
    if "error" in alone:
        raise SystemExit(f"llama-cpp-python in process failed: {alone['error']}")
    rows.append({"tool": "llama-cpp-python in process (Llama.generate)", "tokens": len(alone["tokens"]),
                 "decode_tokens_per_s": (n - 1) / (alone["t_new"] - alone["t_1"]), "t_1": alone["t_1"],
                 "t_new": alone["t_new"], "text": tokenizer.decode(alone["tokens"])})
    ours = rows[0]["decode_tokens_per_s"]
    for row in rows:
        row["lmforge_over_this"] = ours / row["decode_tokens_per_s"]
        row["same_text_as_lmforge"] = row["text"] == rows[0]["text"]
    print_table(f"batch-1 greedy decode, {gguf.name}, {args.prompt_tokens}-token WikiText-2 prompt, {n} new tokens, "
                f"{args.threads} threads", ["tool", "tokens", "decode tok/s", "lmforge / this", "same text"],
                [(r["tool"], r["tokens"], r["decode_tokens_per_s"], r["lmforge_over_this"], r["same_text_as_lmforge"])
                 for r in rows])
    save_result(args.out, {"gguf": str(gguf), "prompt_tokens": len(ids), "new_tokens": n, "threads": args.threads,
                           "repeats": args.repeats, "rows": rows,
                           "note": "llama.cpp on its plain CPU buffers (use_extra_bufts off) in every row"},
                models=[args.model, gguf], data=[data_dir() / "wikitext2" / "wiki.test.raw"],
                peers={"llama-cpp-python": (args.llama_python, "llama_cpp_python")})


if __name__ == "__main__":
    main()
