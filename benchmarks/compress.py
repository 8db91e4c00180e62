"""Quantization on SmolLM2-135M: lmforge RTN / GPTQ / activation-aware vs fp32 and llm-compressor's GPTQ.

Protocol (PEERS.md "wt2-32w"): WikiText-2 raw test, windows of 2048 tokens, first
``--windows`` windows. Calibration: ``--calib-samples`` seeded chunks of 2048 tokens (seed 0)
of the web_articles gold text; the same tensor goes to llm-compressor (its own venv,
``.venv-llmcompressor``). Each setting runs in a fresh process, so compression time and
peak RSS belong to that setting alone. Decode speed: ``lmforge.evaluate.speed``, batch 1,
2 threads, greedy ``generate`` with a 64-token prompt.

The source GGUF was Q4_1 (asymmetric int4, groups of 32): asymmetric int4 g32 re-quantizes
it exactly, so the settings here are symmetric int4/int3 in groups of 64 and int8 per channel.
llm-compressor's model is scored as transformers runs it on CPU: dense float32 weights.

    flock /tmp/lmforge-heavy.lock .venv/bin/python benchmarks/compress.py --out benchmarks/results/compress.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-llmcompressor"
SETTINGS = {
    "fp32": None,
    "rtn-int8": ("rtn", dict(bits=8, group_size=None, symmetric=True)),
    "rtn-int4-g64": ("rtn", dict(bits=4, group_size=64, symmetric=True)),
    "gptq-int4-g64": ("gptq", dict(bits=4, group_size=64, symmetric=True)),
    "gptq-int4-g64-sink0": ("gptq", dict(bits=4, group_size=64, symmetric=True, sink_share=0.0)),
    "gptq-int4-g64-true-seq": ("gptq", dict(bits=4, group_size=64, symmetric=True, true_sequential=True)),
    "gptq-int4-g64-head8": ("gptq", dict(bits=4, group_size=64, symmetric=True, lm_head_bits=8)),
    "rtn-int4-g64-head8": ("rtn", dict(bits=4, group_size=64, symmetric=True, lm_head_bits=8)),
    "gptq-int3-g64": ("gptq", dict(bits=3, group_size=64, symmetric=True)),
    "awq-int4-g64": ("awq", dict(bits=4, group_size=64, symmetric=True)),
    "llmcompressor-gptq-int4-g64": "peer",
}

PEER_SCRIPT = """
import json, resource, shutil, sys, time, torch
from pathlib import Path
from transformers import AutoModelForCausalLM
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier
from safetensors.torch import save_file
src, calib, out = sys.argv[1:4]
torch.set_num_threads(2)
ids = torch.load(calib, weights_only=True)
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
scheme = {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True,
          "strategy": "group", "group_size": 64}}}
recipe = GPTQModifier(config_groups=scheme, ignore=["lm_head"], dampening_frac=0.01)
started = time.perf_counter()
oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(ids), max_seq_length=ids.shape[1])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
dense = Path(out) / "dense"
dense.mkdir(parents=True)
state = {k: v.contiguous() for k, v in model.state_dict().items()
         if not k.endswith(("weight_scale", "weight_zero_point", "weight_g_idx")) and k != "lm_head.weight"}
save_file(state, str(dense / "model.safetensors"), metadata={"format": "pt"})
for name in Path(src).iterdir():
    if name.suffix in {".json", ".txt", ".jinja"} and name.name not in {"lmforge.json"}:
        shutil.copy(name, dense / name.name)
model.save_pretrained(Path(out) / "packed", save_compressed=True)
json.dump({"compress_seconds": seconds, "peak_rss_bytes": peak}, open(Path(out) / "peer.json", "w"))
"""


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child(setting: str, calib_file: Path, work: Path, windows: int, speed_tokens: int) -> dict:
    """One setting in this process: quantize (timed), save, score; returns its row."""
    from lmforge.compress import AWQ, GPTQ, RTN, quantize, save_quantized
    from lmforge.workflows.compress import quantized_part_ram
    from lmforge.data import load_corpus
    from lmforge.evaluate import perplexity, speed
    from lmforge.models import load_model, tensor_bytes, zoo_path

    torch.set_num_threads(2)
    row: dict = {"setting": setting}
    spec = SETTINGS[setting]
    if spec == "peer":
        peer = json.loads((work / "peer" / "peer.json").read_text())
        model, tokenizer = load_model(work / "peer" / "dense")
        row.update(peer, disk_bytes=disk_bytes(work / "peer" / "packed"))
        row["note"] = "llm-compressor 0.14 GPTQ W4A16 sym g64; scored dense (as transformers runs it on CPU)"
    else:
        model, tokenizer = load_model("smollm2-135m-instruct-q4_1")
        row["disk_bytes"] = disk_bytes(zoo_path("smollm2-135m-instruct-q4_1"))
        if spec is not None:
            method, options = spec
            config = {"rtn": RTN, "gptq": GPTQ, "awq": AWQ}[method](**options)
            calibration = torch.load(calib_file, weights_only=True)
            started = time.perf_counter()
            report = quantize(model, config, calibration)
            row["compress_seconds"] = time.perf_counter() - started
            row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            save_quantized(model, tokenizer, work / setting, report.to_dict())
            row["disk_bytes"] = disk_bytes(work / setting)
            row["quantized_layers_bytes"], row["quantized_layers_fp32_bytes"] = quantized_part_ram(model)
            row["kept_in_full_precision"] = sorted(report.skipped) + ["model.embed_tokens"]
    row["model_ram_bytes"] = sum(tensor_bytes(model).values())
    if row.get("peak_rss_bytes") is None:
        row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if windows:
        started = time.perf_counter()
        result = perplexity(model, tokenizer, load_corpus("wikitext2"), protocol="windows", seqlen=2048, limit=windows)
        row.update(ppl=result.ppl, tokens=result.tokens, eval_seconds=time.perf_counter() - started)
    if speed_tokens:
        timing = speed(model, tokenizer, new_tokens=speed_tokens, batch_sizes=(1,), repeats=3, threads=2)
        row["decode_tokens_per_s"] = timing["decode_tokens_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=32, help="wikitext2 windows of 2048 tokens to score (0: skip)")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--speed-tokens", type=int, default=64, help="tokens to decode for the speed column (0: skip)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated from: {', '.join(SETTINGS)}")
    parser.add_argument("--out", default="benchmarks/results/compress.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        work = Path(args.work)
        print(json.dumps(child(args.child, work / "calibration.pt", work, args.windows, args.speed_tokens)))
        return

    from lmforge.cli.common import console, human_bytes, print_table
    from lmforge.paths import data_dir
    from provenance import save_result
    from lmforge.data import calibration_batches, load_corpus
    from lmforge.models import load_model, zoo_path

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    _, tokenizer = load_model("smollm2-135m-instruct-q4_1")
    calibration = calibration_batches(tokenizer, load_corpus("web_articles"), args.calib_samples, 2048, seed=0)
    results: dict = {"protocol": {"ppl": f"wikitext2 raw test, windows of 2048, first {args.windows}",
                                  "calibration": f"web_articles gold text, {args.calib_samples} x 2048 tokens, seed 0",
                                  "speed": "lmforge.evaluate.speed: its greedy KV-cache loop, batch 1, 2 threads, 64-token prompt",
                                  "grid": "symmetric; int4/int3 in groups of 64, int8 per output channel"},
                     "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.save(calibration, work / "calibration.pt")
        for setting in settings:
            console.print(f"[bold]{setting}[/]")
            if SETTINGS[setting] == "peer":
                if not (PEER_VENV / "bin" / "python").exists():
                    console.print(f"skipping {setting}: {PEER_VENV} does not exist")
                    continue
                subprocess.run([str(PEER_VENV / "bin" / "python"), "-c", PEER_SCRIPT, str(zoo_path("smollm2-135m-instruct-q4_1")),
                                str(work / "calibration.pt"), str(work / "peer")], check=True)
            out = subprocess.run([sys.executable, __file__, "--child", setting, "--work", str(work), "--windows",
                                  str(args.windows), "--speed-tokens", str(args.speed_tokens)],
                                 check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results["rows"].append(row)
            console.print(json.dumps(row))
            save_result(args.out, results, models=["smollm2-135m-instruct-q4_1"],
                        data=[data_dir() / "wikitext2" / "wiki.test.raw", data_dir() / "web_articles"],
                        peers={"llm-compressor": (PEER_VENV / "bin" / "python", "llmcompressor")})

    rows = results["rows"]
    fp32 = next((r for r in rows if r["setting"] == "fp32"), None)
    print_table(
        f"SmolLM2-135M quantization, wikitext2 {args.windows} windows × 2048, calibration {args.calib_samples} × 2048 "
        "(symmetric grids; the source was Q4_1 asym g32)",
        ["setting", "ppl", "Δ ppl %", "compress s", "peak RSS", "disk", "model RAM", "quantized layers RAM", "decode tok/s",
         "× fp32 decode"],
        [(r["setting"], r.get("ppl"), 100 * (r["ppl"] / fp32["ppl"] - 1) if fp32 and "ppl" in r else None,
          r.get("compress_seconds"), human_bytes(r.get("peak_rss_bytes")), human_bytes(r.get("disk_bytes")),
          human_bytes(r.get("model_ram_bytes")),
          f"{human_bytes(r['quantized_layers_bytes'])} ({r['quantized_layers_bytes'] / r['quantized_layers_fp32_bytes']:.2f}× fp32)"
          if "quantized_layers_bytes" in r else "-",
          r.get("decode_tokens_per_s"),
          r["decode_tokens_per_s"] / fp32["decode_tokens_per_s"] if fp32 and r.get("decode_tokens_per_s") else None)
         for r in rows],
    )
    console.print("kept in full precision by design: embed_tokens, and lm_head (the same tensor) except in the "
                  "-head8 rows, where it is int8 per channel")


if __name__ == "__main__":
    main()
