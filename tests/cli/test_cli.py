"""The CLI end to end on a tiny model folder: tables, JSON, run records, and one-line errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_eval_writes_json_and_records_a_run(tiny_folder, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Water carries sand to the sea. " * 80)
    out = tmp_path / "out.json"
    result = invoke("eval", tiny_folder, "--task", corpus, "--seqlen", 64, "--limit", 3, "--json", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    metrics = data["results"][str(corpus)]
    assert metrics["protocol"] == "windows" and metrics["windows"] == 3 and metrics["tokens"] == 3 * 63
    listed = invoke("runs", "list")
    assert data["run_id"] in listed.output
    shown = invoke("runs", "show", data["run_id"])
    assert '"status": "ok"' in shown.output


def _cli(capsys, monkeypatch, *args):
    """Run the console entry point in-process, as a user would; returns (exit code, stdout, stderr)."""
    from lmforge.cli.main import main

    monkeypatch.setattr(sys, "argv", ["lmforge", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_the_installed_entry_point_reports_errors_without_traceback():
    result = subprocess.run([sys.executable, "-m", "lmforge.cli.main", "eval", "/no/such/model"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "model not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["eval", "/no/such/model"], "model not found"),
        (["eval", "{tiny}", "--task", "no_such_task"], "unknown task"),
        (["eval", "{tiny}", "--task", "hellaswag"], "does not fit the model's context"),
        (["eval", "{tiny}", "--task", "/no/such/corpus.txt"], "unknown task"),
        (["eval", "{tiny}", "--task", "{latin1}", "--seqlen", "64"], "not valid UTF-8"),
        (["eval", "{tiny}", "--task", "{empty}", "--seqlen", "64"], "is empty"),
        (["eval", "{tiny}", "--task", "{latin1}", "--seqlen", "100000"], "above the model's context length"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_2(args, message, tiny_folder, tmp_path, capsys, monkeypatch):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = [a.format(tiny=tiny_folder, latin1=latin1, empty=empty) for a in args]
    code, out, err = _cli(capsys, monkeypatch, *args)
    assert code == 2, err
    assert message in " ".join(err.split())
    assert "Traceback" not in err and "Traceback" not in out
