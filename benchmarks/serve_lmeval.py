"""lm-eval's `local-completions` against `lmforge serve` on loopback equals `lmforge eval` in-process (ARC-Easy).

The server runs as a user runs it (`lmforge serve MODEL` in its own process, 127.0.0.1, a free port);
lm-evaluation-harness 0.4.13 (its own venv, /work/main/.venv-lmeval) scores the task through the
OpenAI completions API with echo + logprobs, the way it scores any hosted model. The same
questions, rendered by lmforge's task spec, go to lm-eval as a local task file (same text, same
choices, same target delimiter), and to `lmforge.evaluate.multiple_choice` in this process.

    flock /tmp/lmforge-heavy.lock nice env LMFORGE_DATA_DIR=/work/shared/data \
        .venv/bin/python benchmarks/serve_lmeval.py --limit 100
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
TASK = "arc_easy_lmforge_served"

TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    log = tempfile.TemporaryFile()  # a file, not a pipe nobody reads (a full pipe would block the server)
    server = subprocess.Popen([sys.executable, "-m", "lmforge.cli.main", "serve", model, "--port", str(port),
                               "--name", "served", "--rate", "1000000", "--usage-log", "off",
                               "--max-concurrent", "8"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            sys.exit(f"lmforge serve exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    sys.exit("lmforge serve did not start within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrent", type=int, default=4, help="lm-eval's num_concurrent requests")
    parser.add_argument("--lm-eval-python", default=str(ROOT / ".venv-lmeval" / "bin" / "python"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_lmeval.json"))
    args = parser.parse_args()

    import torch

    from lmforge.cli.common import print_table, save_json
    from lmforge.evaluate import load_task, multiple_choice
    from lmforge.models import load_model, zoo_path
    from lmforge.paths import data_dir

    torch.set_num_threads(args.threads)
    if not Path(args.lm_eval_python).exists():
        sys.exit(f"no lm-eval venv at {args.lm_eval_python}; pass --lm-eval-python")
    spec = load_task("arc_easy")
    questions = [spec.render(doc) for doc, _ in zip(spec.documents(None), range(args.limit))]
    model_dir = zoo_path(args.model) if zoo_path(args.model).exists() else Path(args.model)

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data = work / "arc_easy.jsonl"
        data.write_text("".join(json.dumps({"text": t, "choices": c, "answer": a}) + "\n" for t, c, a in questions))
        (work / "tasks").mkdir()
        (work / "tasks" / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data))
        port = free_port()
        server = start_server(args.model, port, args.threads)
        try:
            command = [args.lm_eval_python, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args",
                       f"model=served,base_url=http://127.0.0.1:{port}/v1/completions,tokenizer_backend=huggingface,"
                       f"tokenizer={model_dir},num_concurrent={args.concurrent},max_retries=1,tokenized_requests=True",
                       "--tasks", TASK, "--include_path", str(work / "tasks"), "--output_path", str(work / "out")]
            env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "OPENAI_API_KEY": "unused"}
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            served_s = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=60)
        if done.returncode:
            sys.exit(f"lm-eval failed:\n{done.stderr[-3000:]}")
        results = json.loads(Path(sorted(glob.glob(str(work / "out" / "**" / "results_*.json"),
                                                   recursive=True))[-1]).read_text())["results"][TASK]

    model, tokenizer = load_model(args.model)
    started = time.perf_counter()
    local = multiple_choice(model, tokenizer, spec, limit=args.limit, batch_size=8)
    local_s = time.perf_counter() - started
    rows = [("lm-eval local-completions → lmforge serve", results["acc,none"], results["acc_norm,none"], served_s),
            ("lmforge eval (in process)", local["acc"], local["acc_norm"], local_s)]
    print_table(f"ARC-Easy, first {args.limit} questions, {args.model}", ["scorer", "acc", "acc_norm", "seconds"], rows)
    agree = abs(rows[0][1] - rows[1][1]) <= 1e-3 and abs(rows[0][2] - rows[1][2]) <= 1e-3
    print("equal to 1e-3:", agree)
    save_json(args.out, {"task": "arc_easy", "limit": args.limit, "served": {"acc": rows[0][1], "acc_norm": rows[0][2],
                                                                            "seconds": served_s},
                         "in_process": {"acc": local["acc"], "acc_norm": local["acc_norm"], "seconds": local_s},
                         "equal_to_1e-3": agree, "concurrent": args.concurrent,
                         "provenance": provenance(models=[model_dir], data=[data_dir() / "arc_easy" / "test.jsonl"],
                                                  peers={"lm-eval": (args.lm_eval_python, "lm_eval")})})
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
