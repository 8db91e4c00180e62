"""lmforge against lm-evaluation-harness itself on the same YAML, data and (tiny) model folder, when its venv exists."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from lmforge.evaluate.tasks import EvalSettings, evaluate_task, resolve

LM_EVAL_PYTHON = Path(os.environ.get("LMFORGE_LMEVAL_PYTHON", Path(__file__).resolve().parents[2] / ".venv-lmeval/bin/python"))
if not LM_EVAL_PYTHON.exists():
    LM_EVAL_PYTHON = Path("/work/main/.venv-lmeval/bin/python")

DOCS = [{"q": f"Question number {i} about rocks, wind and water", "choices": ["wind", "sugar and ice", "a circuit"],
         "label": i % 3, "answer": f"#### {i}"} for i in range(8)]


@pytest.mark.slow
@pytest.mark.skipif(not LM_EVAL_PYTHON.exists(), reason="lm-eval's venv (.venv-lmeval) is not installed")
def test_same_requests_responses_and_metrics_as_lm_eval(tiny_folder, tmp_path):
    from lmforge.models import load_model

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "fewshot_split": "test", "num_fewshot": 2, "doc_to_text": "Q: {{q}}\nA:"}
    tasks = {
        "ref_mc": {**common, "output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "label",
                   "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]},
        "ref_gen": {**common, "output_type": "generate_until", "doc_to_target": "answer",
                    "generation_kwargs": {"until": ["\n\n", "Q:"], "max_gen_toks": 10, "do_sample": False},
                    "filter_list": [{"name": "num", "filter": [{"function": "regex", "regex_pattern": r"(\w+)",
                                                                "group_select": -1}, {"function": "take_first"}]}],
                    "metric_list": [{"metric": "exact_match", "ignore_case": True, "regexes_to_ignore": ["(?s).*#### "]}]},
        "ref_ll": {**common, "num_fewshot": 0, "output_type": "loglikelihood", "doc_to_target": "{{' ' + choices[0]}}",
                   "metric_list": [{"metric": "perplexity"}, {"metric": "acc"}]},
    }
    for name, spec in tasks.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **spec}))
    out = tmp_path / "out"
    subprocess.run([str(LM_EVAL_PYTHON), "-m", "lm_eval", "--model", "hf", "--model_args",
                    f"pretrained={tiny_folder},dtype=float32", "--tasks", ",".join(tasks), "--include_path", str(tmp_path),
                    "--device", "cpu", "--batch_size", "1", "--log_samples", "--output_path", str(out)],
                   check=True, capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                                                         "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    theirs = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    model, tokenizer = load_model(tiny_folder)
    for name in tasks:
        ours = evaluate_task(model, tokenizer, resolve(tmp_path / f"{name}.yaml"), EvalSettings(batch_size=4))
        for metric, value in ours.metrics.items():
            assert value == pytest.approx(theirs[name][metric], rel=1e-6, abs=1e-6), (name, metric)
        samples = [json.loads(line) for line in next(out.rglob(f"samples_{name}_*.jsonl")).read_text().splitlines()]
        for theirs_sample in samples:
            mine = ours.samples[theirs_sample["doc_id"]]
            prompts = [args["arg_0"] for args in theirs_sample["arguments"].values()]
            if name == "ref_gen":
                assert prompts == [mine["prompt"]] and theirs_sample["resps"][0][0] == mine["response"]
            else:
                assert prompts == [c for c, _ in mine["pairs"]]
                for (their_ll, their_greedy), (ll, greedy) in zip((r[0] for r in theirs_sample["resps"]), mine["response"]):
                    assert float(their_ll) == pytest.approx(ll, abs=1e-4) and (their_greedy == "True") == greedy
