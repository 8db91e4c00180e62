"""lmforge vs lm-evaluation-harness 0.4.13 on every shipped task: same YAML, same local data, same model folder.

Both tools read lmforge's shipped task files (src/lmforge/evaluate/tasks/builtin,
given to lm-eval as --include_path, where they replace its tasks of the same
name) and run from the data folder, so the relative data paths in the files
read the same files for both. Both load the same safetensors folder of
SmolLM2-135M in float32 on the CPU with the same batch size and --limit (per
task; for the mmlu group, per subject). Timing rule: whole process, start to
exit, for both (imports, model and data loading included).

Printed per task: both tools' metrics, their largest difference, per-document
agreement of every metric (the decision per document: acc, acc_norm,
exact_match per filter), the largest log-likelihood difference (or the share
of identical generations) and both wall times.

    python benchmarks/lmeval_parity.py --limit 50
    python benchmarks/lmeval_parity.py --tasks gsm8k --limit 200 --out benchmarks/results/lmeval_parity_gsm8k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmforge.evaluate.tasks import builtin_folder, expand, resolve
from lmforge.evaluate.tasks.documents import resolve_data_files
from lmforge.io import write_json
from lmforge.models import pull
from lmforge.paths import data_dir
from lmforge.runs.hashing import content_hash
from lmforge.runs.store import package_versions

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("hellaswag", "mmlu", "gsm8k", "arc_easy", "piqa", "winogrande", "lambada_openai")
console = Console(width=170)


def provenance(lm_eval_python: str, model_dir: Path, tasks: list[str]) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    lm_eval_version = subprocess.run([lm_eval_python, "-c", "import importlib.metadata as m; print(m.version('lm_eval'))"],
                                     capture_output=True, text=True).stdout.strip()
    data_files = sorted({f for name in tasks for config in expand(resolve(name)) for f in _files(config)})
    import torch

    return {
        "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
        "versions": {**package_versions(), "lm_eval": lm_eval_version}, "model": str(model_dir),
        "model_hash": content_hash(model_dir), "data_hashes": {f: content_hash(f) for f in data_files},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join([sys.executable, *sys.argv]),
    }


def _files(config) -> list[str]:
    files = resolve_data_files(config, None)["data_files"]
    return [p for v in (files.values() if isinstance(files, dict) else [files]) for p in (v if isinstance(v, list) else [v])]


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "LMFORGE_DATA_DIR": str(data_dir()), "TOKENIZERS_PARALLELISM": "false"}


def run_lmforge(model_dir: Path, task: str, limit: int, batch_size: int, work: Path) -> dict:
    out, samples = work / f"lmforge_{task}.json", work / f"lmforge_{task}.jsonl"
    cmd = [sys.executable, "-m", "lmforge.cli.main", "eval", str(model_dir), "--task", task, "--limit", str(limit),
           "--batch-size", str(batch_size), "--json", str(out), "--log-samples", str(samples)]
    env = {**_env(), "PYTHONPATH": str(ROOT / "src"), "LMFORGE_HOME": str(work / "lmforge-home")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=data_dir(), env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lmforge failed on {task}:\n{proc.stderr[-3000:]}")
    summary = json.loads(out.read_text())["results"][task]
    metrics = summary.get("group", {}).get("metrics") or next(iter(summary["tasks"].values()))["metrics"]
    per_doc = {}
    for line in samples.read_text(encoding="utf-8").splitlines():
        s = json.loads(line)
        per_doc[(s["task"], s["doc_id"])] = s
    return {"metrics": metrics, "wall_s": wall, "samples": per_doc,
            "documents": sum(t["documents"] for t in summary["tasks"].values()),
            "eval_s": sum(t["seconds"] for t in summary["tasks"].values())}


def run_lm_eval(python: str, model_dir: Path, task: str, limit: int, batch_size: int, work: Path) -> dict:
    out = work / f"lm_eval_{task}"
    cmd = [python, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
           "--tasks", task, "--include_path", str(builtin_folder()), "--limit", str(limit), "--batch_size",
           str(batch_size), "--device", "cpu", "--log_samples", "--output_path", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=data_dir(), env=_env())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lm-eval failed on {task}:\n{proc.stderr[-3000:]}")
    results = json.loads(max(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime).read_text())["results"]
    metrics = {k: v for k, v in results[task].items() if "," in k and "_stderr" not in k}
    per_doc: dict = {}
    for path in out.rglob("samples_*.jsonl"):
        name = path.name[len("samples_"):].rsplit("_", 1)[0]
        for line in path.read_text(encoding="utf-8").splitlines():
            s = json.loads(line)
            per_doc.setdefault((name, s["doc_id"]), []).append(s)
    return {"metrics": metrics, "wall_s": wall, "samples": per_doc}


def compare(ours: dict, theirs: dict) -> dict:
    """Per-document agreement of every metric, and how close the raw responses are."""
    agree = total = 0
    ll_diff, same_text, texts = 0.0, 0, 0
    for key, lines in theirs["samples"].items():
        mine = ours["samples"].get(key)
        if mine is None:
            continue
        for line in lines:
            for metric in line["metrics"]:
                total += 1
                agree += float(line[metric]) == float(mine["metrics"].get(f"{metric},{line['filter']}", float("nan")))
        first = lines[0]
        if isinstance(mine["response"], str):
            texts += 1
            same_text += first["resps"][0][0] == mine["response"]
        elif isinstance(mine["response"], list):
            for (theirs_ll, _), (our_ll, _) in zip((r[0] for r in first["resps"]), mine["response"]):
                ll_diff = max(ll_diff, abs(float(theirs_ll) - our_ll))
        else:
            ll_diff = max(ll_diff, abs(float(first["resps"][0][0]) - mine["response"]))
    metric_diff = max(abs(ours["metrics"][k] - theirs["metrics"][k]) for k in ours["metrics"] if k in theirs["metrics"])
    return {"decisions_agree": agree, "decisions": total, "max_loglikelihood_diff": ll_diff if not texts else None,
            "identical_generations": f"{same_text}/{texts}" if texts else None, "max_metric_diff": metric_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--limit", type=int, default=50, help="documents per task (per subject for mmlu)")
    parser.add_argument("--limit-for", action="append", default=[], metavar="TASK=N",
                        help="a different limit for one task, e.g. mmlu=2 gsm8k=200 (repeatable)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default=None, help="a safetensors model folder (default: the pulled SmolLM2-135M)")
    parser.add_argument("--lmeval-python", default=str(ROOT / ".venv-lmeval" / "bin" / "python"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lmeval_parity.json"))
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    limits = {task: args.limit for task in tasks} | {k: int(v) for k, v in (x.split("=") for x in args.limit_for)}
    model_dir = Path(args.model) if args.model else pull("smollm2-135m")
    header = {"limits": limits, "batch_size": args.batch_size, "timing": "whole process, both tools",
              "provenance": provenance(args.lmeval_python, model_dir, tasks)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for task in tasks:
            console.print(f"[bold]{task}[/]: lmforge …")
            ours = run_lmforge(model_dir, task, limits[task], args.batch_size, work)
            console.print(f"[bold]{task}[/]: lm-eval …")
            theirs = run_lm_eval(args.lmeval_python, model_dir, task, limits[task], args.batch_size, work)
            rows.append({"task": task, "limit": limits[task], "documents": ours["documents"], "lmforge": ours["metrics"],
                         "lm_eval": theirs["metrics"], "lmforge_wall_s": ours["wall_s"], "lmforge_eval_s": ours["eval_s"],
                         "lm_eval_wall_s": theirs["wall_s"], **compare(ours, theirs)})
            console.print(rows[-1])
            write_json(args.out, {**header, "rows": rows})  # after every task: a long run keeps what it measured
    table = Table(title=f"{model_dir.name} fp32 · lmforge vs lm-eval 0.4.13 · batch {args.batch_size} · "
                        "wall = whole process", title_justify="left")
    for column in ("task", "docs", "metric", "lmforge", "lm-eval", "|Δ|", "per-doc agree", "max |Δll| / same gen",
                   "lmforge s", "lm-eval s", "speed-up"):
        table.add_column(column, justify="right")
    for row in rows:
        for i, (metric, value) in enumerate(row["lmforge"].items()):
            theirs = row["lm_eval"].get(metric, float("nan"))
            first = i == 0
            table.add_row(row["task"] if first else "", str(row["documents"]) if first else "", metric, f"{value:.4f}",
                          f"{theirs:.4f}", f"{abs(value - theirs):.1e}",
                          f"{row['decisions_agree']}/{row['decisions']}" if first else "",
                          (row["identical_generations"] or f"{row['max_loglikelihood_diff']:.1e}") if first else "",
                          f"{row['lmforge_wall_s']:.0f}" if first else "", f"{row['lm_eval_wall_s']:.0f}" if first else "",
                          f"{row['lm_eval_wall_s'] / row['lmforge_wall_s']:.2f}×" if first else "")
    console.print(table)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
