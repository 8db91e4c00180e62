import json
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from lmforge.cli.main import app


def test_data_run_stats_and_card(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    source = tmp_path / "docs.jsonl"
    text = "The river runs to the sea and the people of the town walk with their dogs along it every day."
    source.write_text("\n".join(json.dumps({"text": f"{text} Day {i}."}) for i in range(4)) + "\n")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"input": {"paths": [str(source)]}, "steps": ["exact_dedup", "pii"],
                                        "output": {"dir": str(tmp_path / "out")}}))
    runner = CliRunner()
    result = runner.invoke(app, ["data", "run", str(pipeline), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "4 documents in, 4 out" in result.output
    assert (tmp_path / "out" / "card.html").exists()
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "out")])
    assert result.exit_code == 0 and "exact_dedup" in result.output


def test_unknown_step_is_a_one_line_error(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("input: {paths: [x]}\nsteps: [dedupe]\n")
    result = subprocess.run([sys.executable, "-m", "lmforge.cli.main", "data", "run", str(pipeline)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown step 'dedupe'" in result.stderr and "Traceback" not in result.stderr
