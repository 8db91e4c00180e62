"""Decode speed at batch 1: lmforge's greedy loop beside transformers' `generate` and llama.cpp, same prompt, same run.

The prompt is the first ``--prompt-tokens`` tokens of WikiText-2 (the model's tokenizer); each tool decodes
greedily from exactly those token ids. Every tool is timed the same way, by its own clock around its own call:
the time to produce 1 token (prefill + first token) and the time to produce ``--new-tokens``; decode tokens/s is
``(new_tokens - 1) / (t_new - t_1)``, median over ``--repeats`` after a warm-up. llama.cpp (llama-cpp-python in
its own venv, ``ROOT/.venv-llama``) runs the model's GGUF with its own kernels, so its row is the speed of
that file: for fp32 the GGUF the float weights were dequantized from (the offline zoo entry's Q4_1), for each
packed setting (``--settings``: RTN int4 g64, and with the int8 output head) the very same codes exported to
GGUF (Q4_0, Q8_0 head). Each setting's lmforge and `generate` rows run the same packed model.

    flock /tmp/lmforge-heavy.lock nice .venv/bin/python benchmarks/decode.py --out benchmarks/results/decode.json
"""

from __future__ import annotations

import argparse
import statistics
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lmforge.cli.common import print_table
from lmforge.compress import RTN, quantize
from lmforge.compress.export.gguf import export_gguf
from lmforge.data import load_corpus
from lmforge.evaluate.speed import greedy_decode
from lmforge.models import ZOO, load_model, pull, read_metadata
from lmforge.paths import data_dir
from llama_cpp_timing import time_llama_generate
from provenance import save_result

ROOT = Path(__file__).resolve().parents[1]
# the model as loaded, and lmforge's packed settings whose decode speed README quotes (RTN: codes in seconds)
SETTINGS = {"fp32": None, "rtn-int4-g64": RTN(bits=4, group_size=64, symmetric=True),
            "rtn-int4-g64-head8": RTN(bits=4, group_size=64, symmetric=True, lm_head_bits=8)}



def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_setting(setting: str, model, tokenizer, prompt: torch.Tensor, n: int, args, gguf) -> list[dict]:
    """One setting through the three tools: lmforge's loop, transformers' generate, llama.cpp on ``gguf``."""
    ids, rows = prompt[0].tolist(), []

    def ours(count):
        return greedy_decode(model, prompt, count)[3]

    def theirs(count):
        with torch.inference_mode():
            return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=count,
                                  min_new_tokens=count, do_sample=False, pad_token_id=tokenizer.pad_token_id)[:, len(ids):]

    reference = ours(n)[0].tolist()
    for name, fn in (("lmforge greedy loop (evaluate/speed.py)", ours), ("transformers generate", theirs)):
        t_1, t_new = timed(lambda: fn(1), args.repeats), timed(lambda: fn(n), args.repeats)
        rows.append({"setting": setting, "tool": name, "t_1": t_1, "t_new": t_new,
                     "decode_tokens_per_s": (n - 1) / (t_new - t_1), "same_tokens_as_lmforge": fn(n)[0].tolist() == reference})
    if gguf and Path(args.llama_python).exists():
        tool = f"llama.cpp ({Path(gguf).name})"
        result = time_llama_generate(args.llama_python, gguf, args.threads, n, args.repeats, ids)
        if "error" in result:  # recorded, not hidden: a crashed peer is a result too (e.g. -11 inside llama_decode)
            rows.append({"setting": setting, "tool": tool, "t_1": None, "t_new": None, "decode_tokens_per_s": None,
                         "same_tokens_as_lmforge": None, "error": result["error"]})
        else:
            rows.append({"setting": setting, "tool": tool, "t_1": result["t_1"], "t_new": result["t_new"],
                         "decode_tokens_per_s": (n - 1) / (result["t_new"] - result["t_1"]),
                         "same_tokens_as_lmforge": result["tokens"] == reference})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated from: {', '.join(SETTINGS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gguf", help="GGUF for llama.cpp (default: the zoo entry's own GGUF)")
    parser.add_argument("--llama-python", default=str(ROOT / ".venv-llama" / "bin" / "python"))
    parser.add_argument("--out", default="benchmarks/results/decode.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model)
    ids = tokenizer(load_corpus("wikitext2").text()[:20_000], add_special_tokens=False)["input_ids"][: args.prompt_tokens]
    prompt = torch.tensor([ids])
    n = args.new_tokens
    rows = []
    source_gguf = args.gguf or (read_metadata(pull(args.model)).get("gguf") if args.model in ZOO else None)
    work = Path(tempfile.mkdtemp(prefix="decode-bench-"))
    for setting in args.settings.split(","):
        if setting != "fp32":
            model, tokenizer = load_model(args.model)
            quantize(model, SETTINGS[setting])
        # llama.cpp runs the same weights: the source GGUF for fp32 (the file they were dequantized from), the very
        # same codes exported for a quantized setting
        gguf = source_gguf if setting == "fp32" else export_gguf(model, tokenizer, work / f"{setting}.gguf").path
        rows += time_setting(setting, model, tokenizer, prompt, n, args, gguf)
    shutil.rmtree(work)
    print_table(f"decode at batch 1, {args.prompt_tokens}-token WikiText-2 prompt, {n} new tokens, {args.threads} threads",
                ["setting", "tool", "first token s", f"{n} tokens s", "decode tok/s", "same tokens"],
                [(r["setting"], r["tool"], r["t_1"], r["t_new"], r["decode_tokens_per_s"], r["same_tokens_as_lmforge"])
                 for r in rows])
    save_result(args.out, {"prompt_tokens": args.prompt_tokens, "new_tokens": n, "threads": args.threads,
                           "settings": {k: repr(v) for k, v in SETTINGS.items()}, "rows": rows},
                models=[args.model, *([source_gguf] if source_gguf else [])], data=[data_dir() / "wikitext2" / "wiki.test.raw"],
                peers={"llama-cpp-python": (args.llama_python, "llama_cpp_python")})


if __name__ == "__main__":
    main()
