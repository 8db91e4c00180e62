"""`compare`: direction-aware deltas and regression flags, in Python and on the command line."""

import json

from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.errors import LmforgeError
from lmforge.report import ANNEX_XI, SECTIONS, compare_runs, regressions
from lmforge.runs import RunRecord


def run(metrics):
    return RunRecord(id="r", command="eval", status="ok", started=0.0, ended=1.0, host=None, metrics=metrics)


def test_direction_aware_verdicts():
    a = run({"wikitext2": {"ppl": 20.0}, "arc_easy.acc": 0.60, "crows.all.pct_stereotype": 55.0,
             "speed": {"decode_tokens_per_s": 17.0, "latency_ms": 50.0}, "arc_easy.acc_stderr": 0.01,
             "tokens": 1000, "only_a": 1.0})
    b = run({"wikitext2": {"ppl": 20.1}, "arc_easy.acc": 0.62, "crows.all.pct_stereotype": 51.0,
             "speed": {"decode_tokens_per_s": 16.0, "latency_ms": 50.0}, "arc_easy.acc_stderr": 0.02,
             "tokens": 2000, "only_b": 1.0})
    verdicts = {d.metric: d.verdict for d in compare_runs(a, b, threshold=0.01)}
    assert verdicts == {
        "wikitext2.ppl": "worse",  # +0.5 % is below the 1 % threshold
        "arc_easy.acc": "better",
        "crows.all.pct_stereotype": "better",  # closer to 50
        "speed.decode_tokens_per_s": "regression",  # -5.9 %
        "speed.latency_ms": "same",
        "arc_easy.acc_stderr": "changed",  # no good direction for an uncertainty
        "tokens": "changed",
        "only_a": "only in A",
        "only_b": "only in B",
    }
    strict = compare_runs(a, b, threshold=0.001)
    assert {d.metric for d in regressions(strict)} == {"wikitext2.ppl", "speed.decode_tokens_per_s"}


def test_compare_and_report_commands(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evals = [r.id for r in reversed(store.list(limit=None, command="eval"))]
    runner = CliRunner()
    result = runner.invoke(app, ["compare", evals[0], evals[1], "--store", str(store.path), "--json", "cmp.json",
                                 "--fail-on-regression"])
    assert result.exit_code == 1, result.output  # GPTQ raised perplexity 12.9 % and lowered accuracy
    deltas = {d["metric"]: d for d in json.loads((tmp_path / "cmp.json").read_text())["deltas"]}
    assert deltas["wikitext2.ppl"]["verdict"] == "regression"
    assert deltas["wikitext2.ppl"]["delta"] == 24.71 - 21.895
    assert deltas["disk_bytes"]["verdict"] == "better"
    assert "regression" in result.output
    bad = runner.invoke(app, ["compare", evals[0], "zzz", "--store", str(store.path)])
    assert isinstance(bad.exception, LmforgeError) and "no run 'zzz'" in str(bad.exception)

    result = runner.invoke(app, ["report", "--store", str(store.path), "-o", "site/report.html"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site" / "report.html").is_file() and (tmp_path / "site" / "README.md").is_file()
    recorded = store.get("latest")
    assert recorded.command == "report" and recorded.metrics["sections"] == len(SECTIONS)
    assert recorded.metrics["annex_xi_filled"] + recorded.metrics["annex_xi_missing"] == len(ANNEX_XI)
