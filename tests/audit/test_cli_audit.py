import json

from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.runs import RunStore


def test_audit_compare_writes_json_records_a_run_and_shows_zero_deltas_for_the_same_model(tiny_folder, tmp_path):
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(app, ["audit", str(tiny_folder), "--suite", "robustness,misuse,privacy", "--limit", "3",
                                      "--compare", str(tiny_folder), "--resamples", "50", "--canary", "my pin is |42",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["report"]) == {"robustness", "misuse", "privacy"}
    (canary,) = data["report"]["privacy"]["canaries"]
    assert canary["space_size"] == 100 and canary["method"] == "exact" and 1 <= canary["rank"] <= 100
    robustness = data["comparison"]["robustness"]["arc_easy"]["acc"]
    assert robustness["clean"]["estimate"] == 0 and robustness["worst_case"]["estimate"] == 0
    assert data["comparison"]["misuse"]["all"]["delta"] == 0
    record = RunStore().get(data["run_id"])
    assert record.status == "ok" and "arc_easy_acc_worst_case" in record.metrics and "report" in record.artifacts


def test_audit_rejects_unknown_suites_in_one_line(tiny_folder):
    result = CliRunner().invoke(app, ["audit", str(tiny_folder), "--suite", "bias,fairness"])
    assert result.exit_code != 0
    assert "fairness" in str(result.exception) or "fairness" in result.output
