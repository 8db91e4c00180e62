"""lmforge's `rolling` perplexity against lm-evaluation-harness's `wikitext` task, same model, same text, one run.

lm-eval runs from its own virtual environment (it is never an lmforge dependency),
given the WikiText-2 articles as a local-file task that includes lm-eval's own
`wikitext` task definition (its detokenizer and metrics). Both tools load the same
safetensors folder of SmolLM2-135M in float32 and score with max_length 2048.
Both are timed end to end as a user runs them (process start to results).

    python benchmarks/eval_rolling.py --docs 9            # the PEERS.md setting
    python benchmarks/eval_rolling.py --docs 2 --lmeval-python .venv-lmeval/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmforge.data import load_corpus
from lmforge.evaluate.perplexity import wikitext_detokenizer
from lmforge.paths import data_dir
from provenance import save_result
from lmforge.models import load_model, pull

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def lm_eval_package(python: str) -> Path:
    out = subprocess.run([python, "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def write_local_task(folder: Path, documents: list[str], lm_eval_dir: Path) -> str:
    data = folder / "wikitext_docs.jsonl"
    data.write_text("".join(json.dumps({"page": d}) + "\n" for d in documents), encoding="utf-8")
    (folder / "wikitext_local.yaml").write_text(
        f"include: {lm_eval_dir / 'tasks' / 'wikitext' / 'wikitext.yaml'}\n"
        "task: wikitext_local\n"
        "dataset_path: json\n"
        "dataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "training_split: null\nvalidation_split: null\ntest_split: test\n",
        encoding="utf-8",
    )
    return "wikitext_local"


def run_lm_eval(python: str, model_dir: Path, seqlen: int, documents: list[str], workdir: Path) -> dict:
    task = write_local_task(workdir, documents, lm_eval_package(python))
    cmd = [python, "-m", "lm_eval", "--model", "hf",
           "--model_args", f"pretrained={model_dir},dtype=float32,max_length={seqlen}",
           "--tasks", task, "--include_path", str(workdir), "--batch_size", "1", "--device", "cpu",
           "--output_path", str(workdir / "lm_eval_out")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                                                                       "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"lm-eval failed:\n{proc.stderr[-3000:]}")
    results_file = max((workdir / "lm_eval_out").rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads(results_file.read_text())["results"][task]
    return {"word_perplexity": metrics["word_perplexity,none"], "byte_perplexity": metrics["byte_perplexity,none"],
            "bits_per_byte": metrics["bits_per_byte,none"], "wall_s": wall}


def run_lmforge(model_dir: Path, seqlen: int, n_docs: int, workdir: Path) -> dict:
    out = workdir / "lmforge.json"
    cmd = [sys.executable, "-m", "lmforge.cli.main", "eval", str(model_dir), "--task", "wikitext2",
           "--protocol", "rolling", "--seqlen", str(seqlen), "--limit", str(n_docs), "--json", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=workdir)
    wall = time.perf_counter() - start
    metrics = json.loads(out.read_text())["results"]["wikitext2"]
    return {**{k: metrics[k] for k in ("word_perplexity", "byte_perplexity", "bits_per_byte", "tokens", "windows")},
            "wall_s": wall, "eval_s": metrics["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=9, help="first N WikiText-2 test articles")
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--lmeval-python", default=str(ROOT / ".venv-lmeval" / "bin" / "python"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_rolling.json"))
    args = parser.parse_args()

    model_dir = pull("smollm2-135m-instruct-q4_1")
    documents = list(load_corpus("wikitext2").documents(args.docs))
    _, tokenizer = load_model(model_dir)
    tokens = sum(len(tokenizer.encode(wikitext_detokenizer(d))) for d in documents)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        console.print(f"scoring {args.docs} articles ({tokens:,} tokens) with lmforge ...")
        ours = run_lmforge(model_dir, args.seqlen, args.docs, workdir)
        console.print("... and with lm-evaluation-harness")
        theirs = run_lm_eval(args.lmeval_python, model_dir, args.seqlen, documents, workdir)

    table = Table(title=f"SmolLM2-135M fp32 · WikiText-2 test, first {args.docs} articles · rolling, max_length {args.seqlen}",
                  title_justify="left")
    for column in ("tool", "word_perplexity", "byte_perplexity", "bits_per_byte", "wall s", "tokens/s"):
        table.add_column(column, justify="right")
    for name, result in (("lm-evaluation-harness 0.4.13", theirs), ("lmforge", ours)):
        table.add_row(name, f"{result['word_perplexity']:.4f}", f"{result['byte_perplexity']:.5f}",
                      f"{result['bits_per_byte']:.5f}", f"{result['wall_s']:.1f}", f"{tokens / result['wall_s']:.1f}")
    console.print(table)
    difference = abs(ours["word_perplexity"] - theirs["word_perplexity"]) / theirs["word_perplexity"]
    speedup = theirs["wall_s"] / ours["wall_s"]
    console.print(f"word_perplexity relative difference: {difference:.2e} (target ≤ 1e-3); "
                  f"speed: lmforge {speedup:.2f}× lm-eval (target ≥ 2×)")
    save_result(args.out, {"docs": args.docs, "tokens": tokens, "seqlen": args.seqlen, "lm_eval": theirs,
                          "lmforge": ours, "relative_difference": difference, "speedup": speedup},
                models=["smollm2-135m-instruct-q4_1"], data=[data_dir() / "wikitext2" / "wiki.test.raw"],
                peers={"lm-eval": (args.lmeval_python, "lm_eval")})


if __name__ == "__main__":
    main()
