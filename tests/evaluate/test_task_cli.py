"""`lmforge eval MODEL --task <task.yaml>`: tables, JSON, per-sample logs, run metrics the report reads, one-line errors."""

import json

import yaml
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.runs import RunStore

DOCS = [{"q": "Rocks are worn down by", "choices": ["wind", "sugar"], "label": 0},
        {"q": "A battery stores", "choices": ["energy", "rocks"], "label": 0},
        {"q": "Sunlight feeds", "choices": ["plants", "circuits"], "label": 0}]


def _task(folder, **keys):
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    spec = {"task": "cli_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "docs.jsonl"}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "Q: {{q}}\nA:",
            "doc_to_choice": "choices", "doc_to_target": "label", **keys}
    (folder / "tasks").mkdir(exist_ok=True)
    (folder / "tasks" / "cli_mc.yaml").write_text(yaml.safe_dump(spec))
    return folder / "tasks"


def test_eval_task_by_name_under_include_path(tiny_folder, tmp_path):
    tasks = _task(tmp_path)
    out, samples = tmp_path / "out.json", tmp_path / "samples.jsonl"
    result = CliRunner().invoke(app, ["eval", str(tiny_folder), "--task", "cli_mc", "--include-path", str(tasks),
                                      "--data-dir", str(tmp_path), "--limit", "2", "--json", str(out),
                                      "--log-samples", str(samples), "--cache"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    metrics = data["results"]["cli_mc"]["tasks"]["cli_mc"]["metrics"]
    assert set(metrics) == {"acc,none", "acc_norm,none"} and data["results"]["cli_mc"]["tasks"]["cli_mc"]["documents"] == 2
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [s["doc_id"] for s in lines] == [0, 1] and lines[0]["pairs"][0] == ["Q: Rocks are worn down by\nA:", " wind"]
    assert set(lines[0]["metrics"]) == {"acc,none", "acc_norm,none"}
    record = RunStore().get(data["run_id"])
    assert record.metrics["cli_mc.acc"] == metrics["acc,none"] and "cli_mc.acc_norm" in record.metrics


def test_eval_task_file_errors_are_one_line(tiny_folder, tmp_path):
    tasks = _task(tmp_path, num_fewshot=9, fewshot_split="test")
    result = CliRunner().invoke(app, ["eval", str(tiny_folder), "--task", str(tasks / "cli_mc.yaml"),
                                      "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "num_fewshot 9 is larger than the 2" in message and "\n" not in message
    result = CliRunner().invoke(app, ["eval", str(tiny_folder), "--task", str(tasks / "cli_mc.yaml"),
                                      "--fewshot-as-multiturn"])
    assert result.exit_code != 0 and "--apply-chat-template" in str(result.exception)
