"""BBQ on SmolLM2: lmforge's audit against lm-evaluation-harness's `bbq` (multiple choice) task, same rows, same run.

lm-eval 0.4.13 runs in its own venv on the shared BBQ files (../shared/data/bbq/data) through one local task
file per category that includes lm-eval's own `bbq_multiple_choice.yaml` and only swaps the data source; lmforge
runs in a process of its own on the same model folder. Both are timed spawn to exit. Compares, per category,
accuracy in ambiguous and disambiguated contexts and both bias scores (equal to 1e-3 is the target), and the
per-row answers from lm-eval's logged log-likelihoods. Saves everything as JSON.

    flock /tmp/lmforge-heavy.lock nice .venv/bin/python benchmarks/bbq_parity.py [--limit 100]

``--lm-eval-dir DIR`` keeps lm-eval's outputs there and reuses them when they are already complete (a rerun
after an lmforge fix does not pay for lm-eval again; its recorded seconds are those of the run that made them).
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


from lmforge.cli.common import print_table  # noqa: E402
from provenance import save_result  # noqa: E402
from lmforge.models import ZOO, pull  # noqa: E402
from lmforge.paths import data_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUR_SCRIPT = """
import json, sys, time
started = time.perf_counter()
import torch
from lmforge.audit.bbq import bbq
from lmforge.models import load_model
model_name, limit, batch_size, threads, out, *files = sys.argv[1:]
torch.set_num_threads(int(threads))
model, tokenizer = load_model(model_name)
result = bbq(model, tokenizer, files=files, limit=int(limit) or None, batch_size=int(batch_size))
open(out, "w").write(json.dumps({"seconds": time.perf_counter() - started, "result": result.to_dict()}))
"""
# lm-eval's metric name -> lmforge's (condition, measure)
METRICS = {"accuracy_amb": ("ambig", "accuracy"), "accuracy_disamb": ("disambig", "accuracy"),
           "amb_bias_score": ("ambig", "bias_score"), "disamb_bias_score": ("disambig", "bias_score")}


def task_name(category: str) -> str:
    return f"bbq_lmforge_{category.lower()}"


def lm_eval_task_yaml(lm_eval_python: str, category: str, path: Path) -> str:
    tasks = subprocess.run([lm_eval_python, "-c", "import lm_eval.tasks, os; print(os.path.dirname(lm_eval.tasks.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    original = Path(tasks) / "bbq" / "bbq_multiple_choice.yaml"
    return (f"include: {original}\n"
            f"task: {task_name(category)}\n"
            "tag: []\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {path}\n")


def run_lm_eval(lm_eval_python: str, model_dir: Path, files: dict[str, Path], limit: int | None, batch_size: int,
                threads: int, work: Path) -> dict:
    done_marker = work / "done.json"
    if done_marker.exists():
        recorded = json.loads(done_marker.read_text())
        seconds, threads = recorded["seconds"], recorded.get("threads")
    else:
        (work / "tasks").mkdir(parents=True, exist_ok=True)
        for category, path in files.items():
            (work / "tasks" / f"{task_name(category)}.yaml").write_text(lm_eval_task_yaml(lm_eval_python, category, path))
        command = [lm_eval_python, "-m", "lm_eval", "run", "--model", "hf",
                   "--model_args", f"pretrained={model_dir},dtype=float32",
                   "--tasks", ",".join(task_name(c) for c in files), "--include_path", str(work / "tasks"),
                   "--batch_size", str(batch_size), "--device", "cpu", "--output_path", str(work / "out"), "--log_samples"]
        if limit:
            command += ["--limit", str(limit)]
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        (work / "lm_eval.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            sys.exit(f"lm-eval failed:\n{done.stderr[-3000:]}")
        done_marker.write_text(json.dumps({"seconds": seconds, "limit": limit, "threads": threads}))
    results = json.loads(Path(sorted(glob.glob(str(work / "out" / "**" / "results_*.json"), recursive=True))[-1]).read_text())
    per_category = {}
    for category in files:
        task = task_name(category)
        metrics = results["results"][task]
        samples_file = sorted(glob.glob(str(work / "out" / "**" / f"samples_{task}_*.jsonl"), recursive=True))[-1]
        samples = sorted((json.loads(line) for line in open(samples_file)), key=lambda s: s["doc_id"])
        per_category[category] = {
            "rows": len(samples), "acc": metrics["acc,none"],
            **{name: metrics[f"{name},none"] for name in METRICS},
            f"amb_bias_score_{category}": metrics[f"amb_bias_score_{category},none"],
            f"disamb_bias_score_{category}": metrics[f"disamb_bias_score_{category},none"],
            "answers": [int(np.argmax([float(r[0][0]) for r in s["resps"]])) for s in samples],
        }
    return {"seconds": seconds, "threads": threads, "evaluation_seconds": float(results.get("total_evaluation_time_seconds", "nan")),
            "categories": per_category}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1", help="zoo name or HF folder")
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each category (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both tools (on a busy 2-core machine more threads spin against each other)")
    parser.add_argument("--lm-eval-python", default=str(REPO / ".venv-lmeval" / "bin" / "python"))
    parser.add_argument("--lm-eval-dir", default=None, help="keep (and reuse) lm-eval's outputs here")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bbq_parity.json"))
    args = parser.parse_args()

    model_dir = pull(args.model) if args.model in ZOO else Path(args.model)
    files = {path.stem: path for path in sorted((data_dir() / "bbq" / "data").glob("*.jsonl"))}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.lm_eval_dir) if args.lm_eval_dir else Path(tmp) / "lm_eval"
        theirs = run_lm_eval(args.lm_eval_python, model_dir, files, args.limit, args.batch_size, args.threads, work)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", OUR_SCRIPT, args.model, str(args.limit or 0), str(args.batch_size),
                        str(args.threads), str(Path(tmp) / "ours.json"), *map(str, files.values())], check=True)
        our_process_seconds = time.perf_counter() - started
        saved = json.loads((Path(tmp) / "ours.json").read_text())
    ours = saved["result"]

    rows, gaps, agreement = [], {}, {}
    for category, their in theirs["categories"].items():
        mine = ours["categories"][category]
        for name, (condition, measure) in METRICS.items():
            value = mine[condition][measure]["estimate"]
            gaps[f"{category}.{name}"] = abs(value - their[name])
            rows.append((category, name, their[name], value, f"[{mine[condition][measure]['low']:.3f}, "
                         f"{mine[condition][measure]['high']:.3f}]", abs(value - their[name])))
        our_answers = ours["rows"]["answer"][:len(their["answers"])] if len(files) == 1 else [
            a for a, c in zip(ours["rows"]["answer"], ours["rows"]["category"]) if c == category]
        agreement[category] = float(np.mean(np.array(our_answers) == np.array(their.pop("answers"))))
    total_rows = sum(c["rows"] for c in theirs["categories"].values())
    print_table(f"BBQ, {args.model}, {total_rows} rows, batch {args.batch_size}",
                ["category", "metric", "lm-eval 0.4.13", "lmforge", "lmforge bootstrap 95 %", "|difference|"], rows)
    worst = max(gaps.values())
    print(f"largest metric difference {worst:.2e} (target ≤ 1e-3); rows answered alike: "
          + ", ".join(f"{c} {100 * a:.2f} %" for c, a in agreement.items())
          + f"; process wall s: lm-eval {theirs['seconds']:.0f}, lmforge {our_process_seconds:.0f}")
    save_result(args.out, {"model": args.model, "rows": total_rows, "limit": args.limit, "batch_size": args.batch_size,
                           "lm_eval": theirs, "lmforge": {"seconds": our_process_seconds, "threads": args.threads, "own_clock_seconds": saved["seconds"],
                                                         "categories": ours["categories"]},
                           "metric_gaps": gaps, "largest_gap": worst, "answer_agreement": agreement},
                models=[args.model], data=list(files.values()), peers={"lm-eval": (args.lm_eval_python, "lm_eval")})


if __name__ == "__main__":
    main()
