"""Pruning on SmolLM2-135M: magnitude, Wanda and SparseGPT at 50 % unstructured and 2:4; structured pruning.

Protocol (PEERS.md "wt2-32w"): WikiText-2 raw test, windows of 2048 tokens, first
``--windows`` windows; calibration = ``--calib-samples`` chunks of 2048 tokens (seed 0)
of the web_articles gold text, the set the llm-compressor peers were calibrated on.
The dense baseline is measured in the same run. With ``--peer`` the same calibration
tensor is handed to llm-compressor's SparseGPT, run in its own venv
(``.venv-llmcompressor``), and the model it writes is scored by the same code.
``--structured HEADS:MLP,...`` adds structured rows (fractions of query heads per key/value
group and of MLP channels removed): the smaller dense model is saved, reloaded with plain
transformers (its logits must equal the pruned model's), and its size and batch-1 decode
speed are measured beside the dense model's.

    flock /tmp/lmforge-heavy.lock .venv/bin/python benchmarks/prune.py --out benchmarks/results/prune.json
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lmforge.cli.common import console, print_table
from lmforge.compress.pruning import SparseGPT
from lmforge.compress.pruning.structured import Structured, structured_prune
from lmforge.data import calibration_batches, load_corpus
from lmforge.evaluate import perplexity, speed
from lmforge.models import ZOO, load_model, save_model
from lmforge.paths import data_dir
from provenance import save_result

PEER_VENV = Path(__file__).resolve().parents[1] / ".venv-llmcompressor"
PEER_SCRIPT = """
import json, shutil, sys, time, torch
from pathlib import Path
from transformers import AutoModelForCausalLM
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.pruning import SparseGPTModifier
from safetensors.torch import save_file
src, calib, out, sparsity, pattern = sys.argv[1:6]
ids = torch.load(calib, weights_only=True)
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
recipe = SparseGPTModifier(sparsity=float(sparsity), mask_structure=pattern, targets=["Linear"], ignore=["re:.*lm_head"])
started = time.perf_counter()
oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(ids), max_seq_length=ids.shape[1])
algorithm_seconds = time.perf_counter() - started
# dense weights (zeros included) beside the source's config and tokenizer: the folder loads like the source,
# without compressed-tensors, which lmforge's venv does not have
Path(out).mkdir(parents=True, exist_ok=True)
state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
save_file(state, str(Path(out) / "model.safetensors"), metadata={"format": "pt"})
for name in Path(src).iterdir():
    if name.suffix in {".json", ".txt", ".jinja"} and name.name != "lmforge.json":
        shutil.copy(name, Path(out) / name.name)
print(json.dumps({"algorithm_seconds": algorithm_seconds}))
"""
# lmforge's side, shaped like the peer's so both are timed the same way (benchmarks/README.md: whole process, from
# spawn to exit, with each tool's own clock around the algorithm reported beside it)
OUR_SCRIPT = """
import json, sys, time, torch
from lmforge.compress.pruning import Magnitude, SparseGPT, Wanda, prune
from lmforge.models import load_model, save_model
src, calib, out, method, sparsity, pattern, sink_share = sys.argv[1:8]
ids = torch.load(calib, weights_only=True)
model, tokenizer = load_model(src)
extra = {"sink_share": float(sink_share)} if method == "sparsegpt" else {}
config = {"magnitude": Magnitude, "wanda": Wanda, "sparsegpt": SparseGPT}[method](sparsity=float(sparsity), pattern=pattern,
                                                                                 **extra)
started = time.perf_counter()
prune(model, config, ids)
algorithm_seconds = time.perf_counter() - started
save_model(model, tokenizer, out)
print(json.dumps({"algorithm_seconds": algorithm_seconds}))
"""


def model_folder(source: str) -> Path:
    from lmforge.models import pull

    return pull(source) if source in ZOO else Path(source)


def linear_sparsity(model) -> float:
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    return sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)


def cpu_matmul_speed(rows: int = 1536, cols: int = 576, repeats: int = 20) -> list[dict]:
    """Dense ``F.linear`` vs PyTorch CSR sparse matmul at 50 % sparsity, a SmolLM2 MLP-sized weight, on this CPU."""
    weight = torch.randn(rows, cols)
    weight[torch.rand(rows, cols) < 0.5] = 0
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    csr = weight.to_sparse_csr()
    rows_out = []
    for tokens in (1, 2048):
        x = torch.randn(tokens, cols)
        timings = {}
        for name, fn in {"dense": lambda: torch.nn.functional.linear(x, weight), "csr": lambda: (csr @ x.T).T}.items():
            fn()
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            timings[name] = (time.perf_counter() - started) / repeats * 1e3
        rows_out.append({"tokens": tokens, "dense_ms": timings["dense"], "csr_ms": timings["csr"],
                         "speedup": timings["dense"] / timings["csr"]})
    return rows_out


def evaluate(model, tokenizer, corpus, windows: int) -> dict:
    started = time.perf_counter()
    result = perplexity(model, tokenizer, corpus, protocol="windows", seqlen=2048, limit=windows)
    return {"ppl": result.ppl, "tokens": result.tokens, "eval_seconds": time.perf_counter() - started}


def decode_speed(model, tokenizer) -> float:
    return speed(model, tokenizer, prompt_tokens=32, new_tokens=64, batch_sizes=(1,), repeats=3)["decode_tokens_per_s"]


def saved_and_reloaded(model, tokenizer, work: Path, probe: torch.Tensor) -> dict:
    """Save with lmforge's writer, reload with plain transformers, check the logits agree; sizes on disk."""
    from transformers import AutoModelForCausalLM

    folder = save_model(model, tokenizer, work / "structured")
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        gap = (reloaded(probe).logits - model(probe).logits).abs().max().item()
    return {"saved_mb": sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6,
            "reload_max_abs_logit_diff": gap}


def timed_process(command: list[str]) -> dict:
    """Run one tool's whole job in a fresh process: its wall time from spawn to exit, and the algorithm seconds its
    own clock measured (the last line it prints)."""
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return {"process_seconds": time.perf_counter() - started, **json.loads(done.stdout.strip().splitlines()[-1])}


def run_ours(model_dir: Path, calib_file: Path, method: str, pattern: str, out: Path, sink_share: float) -> dict:
    return timed_process([sys.executable, "-c", OUR_SCRIPT, str(model_dir), str(calib_file), str(out), method, "0.5", pattern,
                          str(sink_share)])


def run_peer(model_dir: Path, calib_file: Path, sparsity: float, pattern: str, out: Path) -> dict:
    return timed_process([str(PEER_VENV / "bin" / "python"), "-c", PEER_SCRIPT, str(model_dir), str(calib_file), str(out),
                          str(sparsity), pattern])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--calib-seqlen", type=int, default=2048)
    parser.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    parser.add_argument("--patterns", default="unstructured,2:4")
    parser.add_argument("--sink-shares", default=str(SparseGPT.sink_share),
                        help="SparseGPT rows for each of these sink shares (0: the paper's Hessian)")
    parser.add_argument("--peer", action="store_true", help="also run llm-compressor's SparseGPT (needs .venv-llmcompressor)")
    parser.add_argument("--peer-patterns", help="patterns for the peer (default: --patterns); each takes ~20 min on 2 cores")
    parser.add_argument("--structured", default="", help="structured settings HEADS:MLP (fractions removed), e.g. 0:0.25,0.34:0.25")
    parser.add_argument("--no-refit", action="store_true", help="structured: skip the least-squares refit of the survivors")
    parser.add_argument("--out", default="benchmarks/results/prune.json")
    args = parser.parse_args()
    torch.manual_seed(0)

    model, tokenizer = load_model(args.model)
    dense_state = copy.deepcopy(model.state_dict())
    wikitext = load_corpus("wikitext2")
    calibration = calibration_batches(tokenizer, load_corpus("web_articles"), args.calib_samples, args.calib_seqlen, seed=0)
    results: dict = {"protocol": {"corpus": "wikitext2 raw test", "protocol": "windows", "seqlen": 2048,
                                  "windows": args.windows, "calibration": f"web_articles {tuple(calibration.shape)} seed 0",
                                  "threads": torch.get_num_threads()}, "rows": []}

    sources = {"models": [args.model], "data": [data_dir() / "wikitext2" / "wiki.test.raw", data_dir() / "web_articles"],
               "peers": {"llm-compressor": (PEER_VENV / "bin" / "python", "llmcompressor")} if args.peer else {}}

    def record(name: str, row: dict) -> None:
        results["rows"].append({"setting": name, **row})
        console.print(f"{name}: {json.dumps(row)}")
        save_result(args.out, results, **sources)

    results["cpu_matmul_50pct"] = cpu_matmul_speed()
    print_table("50 % sparse vs dense matmul on this CPU (1536×576 weight)", ["tokens", "dense ms", "CSR ms", "speedup"],
                [(r["tokens"], r["dense_ms"], r["csr_ms"], r["speedup"]) for r in results["cpu_matmul_50pct"]])
    record("dense fp32", evaluate(model, tokenizer, wikitext, args.windows))
    work = Path(tempfile.mkdtemp(prefix="prune-bench-"))
    calib_file = work / "calibration.pt"
    torch.save(calibration, calib_file)  # the one tensor both tools calibrate on
    model_dir = model_folder(args.model)
    for pattern in args.patterns.split(","):
        for method in filter(None, args.methods.split(",")):
            shares = [float(v) for v in args.sink_shares.split(",")] if method == "sparsegpt" else [None]
            for share in shares:
                out = work / f"lmforge-{method}-{pattern.replace(':', 'of')}-{share}"
                row = run_ours(model_dir, calib_file, method, pattern, out, share or 0.0)
                pruned, _ = load_model(out)
                label = f"lmforge {method} {pattern}" + (f" sink_share {share:g}" if len(shares) > 1 else "")
                record(label, {**row, "sink_share": share, "sparsity": linear_sparsity(pruned),
                               **evaluate(pruned, tokenizer, wikitext, args.windows)})
                shutil.rmtree(out)

    structured = [tuple(float(v) for v in item.split(":")) for item in filter(None, args.structured.split(","))]
    if structured:
        model.load_state_dict(dense_state)
        probe = calibration[:1, :256]
        dense_params = sum(p.numel() for p in model.parameters())
        with tempfile.TemporaryDirectory() as work:
            results["rows"][0].update({"parameters": dense_params, "decode_tokens_per_s": decode_speed(model, tokenizer),
                                       **saved_and_reloaded(model, tokenizer, Path(work), probe)})
        save_result(args.out, results, **sources)
        for heads, mlp in structured:
            smaller = copy.deepcopy(model)
            started = time.perf_counter()
            summary = structured_prune(smaller, Structured(heads, mlp, reconstruct=not args.no_refit), calibration)
            row = {"algorithm_seconds": time.perf_counter() - started, "parameters": summary.parameters_after,
                   "parameter_share": summary.parameters_after / dense_params, "config": summary.config}
            with tempfile.TemporaryDirectory() as work:
                row.update(saved_and_reloaded(smaller, tokenizer, Path(work), probe))
            row["decode_tokens_per_s"] = decode_speed(smaller, tokenizer)
            name = f"lmforge structured heads {heads:g} mlp {mlp:g}{' (no refit)' if args.no_refit else ''}"
            record(name, {**row, **evaluate(smaller, tokenizer, wikitext, args.windows)})
            del smaller

    if args.peer:
        for pattern in (args.peer_patterns or args.patterns).split(","):
            peer_dir = work / f"peer-{pattern.replace(':', 'of')}"
            row = run_peer(model_dir, calib_file, 0.5, "0:0" if pattern == "unstructured" else pattern, peer_dir)
            peer, _ = load_model(peer_dir)
            # the tied embeddings must come back dense: llm-compressor prunes lm_head (and so them) unless told
            # "re:.*lm_head" (a plain "lm_head" does not match the name it gives the head)
            row["embedding_zero_share"] = float((peer.get_input_embeddings().weight == 0).float().mean())
            record(f"llm-compressor sparsegpt {pattern}", {**row, "sparsity": linear_sparsity(peer),
                                                          **evaluate(peer, tokenizer, wikitext, args.windows)})
            shutil.rmtree(peer_dir)
    shutil.rmtree(work)

    base = results["rows"][0]["ppl"]
    print_table(f"pruning SmolLM2-135M, wikitext2 windows 2048 × {args.windows}", ["setting", "sparsity", "ppl", "Δ ppl %", "process s", "algorithm s"],
                [(r["setting"], r.get("sparsity", 0.0), r["ppl"], 100 * (r["ppl"] / base - 1), r.get("process_seconds"), r.get("algorithm_seconds")) for r in results["rows"]])
    if structured:
        print_table("structured pruning: a smaller dense model", ["setting", "parameters", "saved MB", "decode tok/s", "ppl", "reload Δ logits"],
                    [(r["setting"], r["parameters"], r["saved_mb"], r["decode_tokens_per_s"], r["ppl"], r["reload_max_abs_logit_diff"])
                     for r in results["rows"] if "parameters" in r])
    save_result(args.out, results, **sources)


if __name__ == "__main__":
    sys.exit(main())
