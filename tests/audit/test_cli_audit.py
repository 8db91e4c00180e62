import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lmforge.workflows.audit import robustness
from lmforge.cli.main import app
from lmforge.models import load_model, save_model, tiny_model_and_tokenizer
from lmforge.runs import RunStore


def test_audit_compare_writes_json_records_a_run_and_shows_the_other_models_deltas(tiny_folder, tmp_path):
    other, tokenizer = tiny_model_and_tokenizer(seed=6, hidden_size=32, intermediate_size=64)
    other_folder = save_model(other, tokenizer, tmp_path / "other")
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(app, ["audit", str(tiny_folder), "--suite", "robustness,misuse,privacy", "--limit", "3",
                                      "--compare", str(other_folder), "--resamples", "50", "--canary", "my pin is |42",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["report"]) == {"robustness", "misuse", "privacy"}
    (canary,) = data["report"]["privacy"]["canaries"]
    assert canary["space_size"] == 100 and canary["method"] == "exact" and 1 <= canary["rank"] <= 100
    # the expected deltas come from auditing each model on its own through the library
    clean = [np.array(robustness(*load_model(f), "arc_easy", limit=3, resamples=10)["per_example"]["acc"])
             for f in (tiny_folder, other_folder)]
    compared = data["comparison"]["robustness"]["arc_easy"]["acc"]
    assert compared["clean"]["estimate"] == pytest.approx(100 * (clean[1][:, 0].mean() - clean[0][:, 0].mean()))
    assert compared["worst_case"]["estimate"] == pytest.approx(100 * (clean[1].min(1).mean() - clean[0].min(1).mean()))
    assert compared["clean"]["estimate"] != 0  # measured: +33.3 points (1 of 3 questions), so a self-comparison fails
    record = RunStore().get(data["run_id"])
    assert record.status == "ok" and "arc_easy_acc_worst_case" in record.metrics and "report" in record.artifacts


def test_audit_rejects_unknown_suites_in_one_line(tiny_folder):
    result = CliRunner().invoke(app, ["audit", str(tiny_folder), "--suite", "bias,fairness"])
    assert result.exit_code != 0
    assert "fairness" in str(result.exception) or "fairness" in result.output
