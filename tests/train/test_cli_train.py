"""`lmforge train` end to end: a run recorded with energy and FLOPs; bad input exits 2 with one line."""

import json

from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.errors import LmforgeError
from lmforge.runs import RunStore

runner = CliRunner()


def test_train_cli_records_the_run_with_energy_and_flops(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Rivers carry sand to the sea, and the sea returns it as rain. " * 300)
    config = tmp_path / "tiny.yaml"
    config.write_text("model: {hidden_size: 32, layers: 1, heads: 2, kv_heads: 2, intermediate_size: 64, "
                      "vocab_size: 300, context_length: 32}\nbatch_size: 4\nmax_steps: 4\nwarmup_steps: 1\n")
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["train", "--config", str(config), "--corpus", str(corpus), "--out",
                                 str(tmp_path / "model-out"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    record = RunStore().get(metrics["run"])
    assert record.command == "train" and record.status == "ok"
    assert record.metrics["train_flops"] > 0 and record.metrics["steps"] == 4
    assert "energy_kwh" in record.energy or record.energy["method"] == "unavailable"
    assert (tmp_path / "model-out" / "model" / "model.safetensors").is_file()


def test_heads_that_do_not_divide_the_width_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    config = tmp_path / "bad.yaml"
    config.write_text("model: {hidden_size: 100, heads: 3, kv_heads: 1}\n")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code != 0 and isinstance(result.exception, LmforgeError)
    assert "model.heads=3 does not divide model.hidden_size=100" in str(result.exception)
