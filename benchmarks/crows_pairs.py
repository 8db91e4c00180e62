"""CrowS-Pairs on SmolLM2: lmforge's audit against lm-evaluation-harness's `crows_pairs_english`, same run.

lm-eval 0.4.13 runs in its own venv (/work/main/.venv-lmeval) on the same CSV
(../shared/data/crows_pairs) through a local task file that includes lm-eval's own
`crows_pairs_english.yaml` and only swaps the data source; lmforge runs in a
process of its own on the same model folder, timed the same way (whole process). Prints both pct_stereotype / likelihood_diff
values, both speeds, and the per-pair agreement; saves everything as JSON.

    flock /tmp/lmforge-heavy.lock .venv/bin/python benchmarks/crows_pairs.py [--limit 100]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lmforge.audit import CrowsPairsResult
from lmforge.cli.common import print_table
from provenance import save_result
from lmforge.models import ZOO, pull
from lmforge.paths import data_dir

REPO = Path(__file__).resolve().parents[1]
OUR_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from lmforge.audit import crows_pairs
from lmforge.models import load_model
model_name, limit, batch_size, out = sys.argv[1:5]
model, tokenizer = load_model(model_name)
result = crows_pairs(model, tokenizer, limit=int(limit) or None, batch_size=int(batch_size))
open(out, "w").write(json.dumps({"seconds": time.perf_counter() - started, "result": result.to_dict()}))
"""
TASK = "crows_pairs_english_lmforge_data"


def lm_eval_task_yaml(lm_eval_python: str, csv_path: Path) -> str:
    tasks = subprocess.run([lm_eval_python, "-c", "import lm_eval.tasks, os; print(os.path.dirname(lm_eval.tasks.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    original = Path(tasks) / "crows_pairs" / "crows_pairs_english.yaml"
    return (f"include: {original}\n"
            f"task: {TASK}\n"
            "tag: []\n"
            "dataset_path: csv\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {csv_path}\n")


def run_lm_eval(lm_eval_python: str, model_dir: Path, csv_path: Path, limit: int | None, batch_size: int, work: Path) -> dict:
    (work / "tasks").mkdir()
    (work / "tasks" / f"{TASK}.yaml").write_text(lm_eval_task_yaml(lm_eval_python, csv_path))
    command = [lm_eval_python, "-m", "lm_eval", "run", "--model", "hf",
               "--model_args", f"pretrained={model_dir},dtype=float32",
               "--tasks", TASK, "--include_path", str(work / "tasks"), "--batch_size", str(batch_size),
               "--device", "cpu", "--output_path", str(work / "out"), "--log_samples"]
    if limit:
        command += ["--limit", str(limit)]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"lm-eval failed:\n{done.stderr[-3000:]}")
    results = json.loads(Path(sorted(glob.glob(str(work / "out" / "**" / "results_*.json"), recursive=True))[-1]).read_text())
    metrics = results["results"][TASK]
    samples_file = sorted(glob.glob(str(work / "out" / "**" / f"samples_{TASK}_*.jsonl"), recursive=True))[-1]
    samples = sorted((json.loads(line) for line in open(samples_file)), key=lambda s: s["doc_id"])
    lls = np.array([[float(r[0][0]) for r in s["resps"]] for s in samples])
    return {"seconds": seconds, "evaluation_seconds": float(results.get("total_evaluation_time_seconds", "nan")),
            "pct_stereotype": 100 * metrics["pct_stereotype,none"],
            "pct_stereotype_stderr": 100 * metrics["pct_stereotype_stderr,none"],
            "likelihood_diff": metrics["likelihood_diff,none"], "pairs": len(samples), "lls": lls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1", help="zoo name or HF folder")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs only (default: all 1,508)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lm-eval-python", default=str(REPO / ".venv-lmeval" / "bin" / "python"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "crows_pairs.json"))
    args = parser.parse_args()

    # The timing rule (benchmarks/README.md): both tools as whole processes, spawn to exit, in the same run;
    # each one's own clock (lm-eval: its evaluation tracker, which starts before the model loads; lmforge: load +
    # score) is reported beside it.
    model_dir = pull(args.model) if args.model in ZOO else Path(args.model)
    csv_path = data_dir() / "crows_pairs" / "crows_pairs_anonymized.csv"
    with tempfile.TemporaryDirectory() as tmp:
        theirs = run_lm_eval(args.lm_eval_python, model_dir, csv_path, args.limit, args.batch_size, Path(tmp))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", OUR_SCRIPT, args.model, str(args.limit or 0), str(args.batch_size),
                        str(Path(tmp) / "ours.json")], check=True)
        our_process_seconds = time.perf_counter() - started
        saved = json.loads((Path(tmp) / "ours.json").read_text())
    ours = CrowsPairsResult.from_dict(saved["result"])
    our_seconds = saved["seconds"]
    summary = ours.summary["all"]

    our_lls = np.stack([ours.ll_more, ours.ll_less], axis=1)
    their_lls = theirs.pop("lls")
    agree = float(((our_lls[:, 0] > our_lls[:, 1]) == (their_lls[:, 0] > their_lls[:, 1])).mean())
    max_ll_gap = float(np.abs(our_lls - their_lls).max())
    pairs = summary["pairs"]
    rows = [
        ("lm-evaluation-harness 0.4.13", theirs["pct_stereotype"], theirs["pct_stereotype_stderr"], "-",
         theirs["likelihood_diff"], theirs["seconds"], theirs["evaluation_seconds"], pairs / theirs["seconds"]),
        ("lmforge", summary["pct_stereotype"]["estimate"], summary["pct_stereotype_stderr"],
         f"[{summary['pct_stereotype']['low']:.2f}, {summary['pct_stereotype']['high']:.2f}]",
         summary["likelihood_diff"], our_process_seconds, our_seconds, pairs / our_process_seconds),
    ]
    print_table(f"CrowS-Pairs (English), {args.model}, {pairs} pairs, batch {args.batch_size}",
                ["tool", "pct_stereotype", "± stderr", "bootstrap 95 %", "likelihood_diff", "process wall s",
                 "own clock s", "pairs/s (process)"], rows)
    gap = abs(summary["pct_stereotype"]["estimate"] - theirs["pct_stereotype"])
    print(f"pct_stereotype difference {gap:.3f} points (target < 0.1); pairs decided alike {100 * agree:.2f} %; "
          f"max |log-likelihood difference| {max_ll_gap:.2e}")
    save_result(args.out, {"model": args.model, "pairs": pairs, "batch_size": args.batch_size, "lm_eval": theirs,
                         "lmforge": {"seconds": our_process_seconds, "own_clock_seconds": our_seconds, **ours.summary}, "pct_stereotype_gap": gap,
                         "decision_agreement": agree, "max_abs_loglikelihood_gap": max_ll_gap},
                models=[args.model], data=[csv_path], peers={"lm-eval": (args.lm_eval_python, "lm_eval")})


if __name__ == "__main__":
    main()
