"""DPO on SmolLM2 with the HH-RLHF harmless pairs: held-out reward accuracy and margin before and after.

Runs `lmforge.workflows.align.align_model` (what `lmforge align` runs) and saves the before/after report, the
loss curve, the settings and the time as JSON. No peer timing here: TRL equality is a test
(tests/train/test_dpo.py), not a benchmark.

    flock /tmp/lmforge-heavy.lock nice .venv/bin/python benchmarks/align_dpo.py [--pairs 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

# benchmarks/ goes last on the path: its gguf.py must not shadow the gguf package lmforge imports.
HERE = str(Path(__file__).resolve().parent)
sys.path = [p for p in sys.path if p != HERE] + [HERE]

from lmforge.paths import data_dir  # noqa: E402
from lmforge.train.dpo import DpoConfig  # noqa: E402
from lmforge.workflows.align import align_model  # noqa: E402
from provenance import save_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--pairs", type=int, default=256, help="training pairs")
    parser.add_argument("--eval-pairs", type=int, default=64)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--max-prompt-length", type=int, default=112)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default=None, help="output folder (reused: a rerun resumes)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "align_dpo.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DpoConfig(limit=args.pairs, eval_pairs=args.eval_pairs, beta=args.beta, lr=args.lr,
                       batch_size=args.batch_size, max_length=args.max_length, max_prompt_length=args.max_prompt_length)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = align_model(args.model, "dpo", config, Path(args.work or tmp), log=print)
        seconds = time.perf_counter() - started
    print(f"held-out ({result.eval_pairs} pairs): reward accuracy {result.before['reward_accuracy']:.3f} -> "
          f"{result.after['reward_accuracy']:.3f}, margin {result.before['reward_margin']:.4f} -> {result.after['reward_margin']:.4f}; "
          f"log-likelihood preference {result.before['logp_accuracy']:.3f} -> {result.after['logp_accuracy']:.3f}; {seconds:.0f} s")
    save_result(args.out, {"model": args.model, "config": asdict(config), "seconds": seconds,
                           "threads": torch.get_num_threads(), **result.metrics()},
                models=[args.model], data=[data_dir() / "hh_rlhf" / "harmless-base-test.jsonl.gz"])


if __name__ == "__main__":
    main()
