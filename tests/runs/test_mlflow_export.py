"""Runs exported to a local file-store MLflow and read back with MlflowClient: every field arrives."""

import json
import os
from pathlib import Path

import pytest

from lmforge.runs import (
    CompressionResult, DataRef, ModelRef, RunStore, TrainingResult, content_hash, record_run,
)

if os.environ.get("CI"):  # an installed extra under CI: a missing mlflow must fail, not skip
    import mlflow  # noqa: F401
else:
    pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from lmforge.runs.mlflow_export import export_runs


def _store(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world")
    plot = tmp_path / "loss.png"
    plot.write_bytes(b"\x89PNG fake")
    base = ModelRef(name="smollm2-135m", path="/zoo/smollm2", hash="sha256:aa", architecture="LlamaForCausalLM",
                    parameters=134515008, dtype="float32")
    trained = ModelRef(name="out/tiny", path=str(tmp_path / "tiny"), hash="sha256:bb", parameters=836448)
    with record_run("train", config={"lr": 3e-3, "model": {"preset": "tiny-1m"}}, inputs={"corpus": corpus},
                    store=store, measure_energy=False) as train:
        train.log_result(TrainingResult(trained, data={"corpus": DataRef.describe(corpus)}, settings={"steps": 3},
                                        final={"final_eval_loss": 7.3, "params": 836448.0},
                                        steps=TrainingResult.loss_curve([8.0, 7.5, 7.2], [(3, 7.3)])))
        train.add_artifact("loss_plot", plot)
    with record_run("compress", config={"method": "gptq", "bits": 4}, store=store, measure_energy=False) as compress:
        compress.log_result(CompressionResult(base, trained, recipe={"method": "gptq", "bits": 4, "group_size": 64},
                                              base_metrics={"wikitext2.ppl": 21.9},
                                              output_metrics={"wikitext2.ppl": 24.1}, cost={"compress_seconds": 61.0}))
    return store, train.id, compress.id, corpus, plot


def test_runs_round_trip_through_a_file_store_mlflow(tmp_path):
    store, train_id, compress_id, corpus, plot = _store(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    exported = export_runs(store.list(limit=None)[::-1], uri)
    assert [e.run_id for e in exported] == [train_id, compress_id] and not any(e.skipped for e in exported)
    client = MlflowClient(tracking_uri=uri)
    by_id = {e.run_id: client.get_run(e.mlflow_run_id) for e in exported}

    train = by_id[train_id]
    assert train.info.status == "FINISHED" and train.info.run_name == f"train {train_id}"
    record = store.get(train_id)
    assert train.info.start_time == int(record.started * 1000) and train.info.end_time == int(record.ended * 1000)
    assert train.data.params == {"lr": "0.003", "model.preset": "tiny-1m", "steps": "3"}
    # the run's metrics, and the last step of each per-step series (MLflow shows the latest value)
    assert train.data.metrics == {"final_eval_loss": 7.3, "params": 836448.0, "train_loss": 7.2, "eval_loss": 7.3}
    history = client.get_metric_history(exported[0].mlflow_run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 8.0), (2, 7.5), (3, 7.2)]
    assert [(m.step, m.value) for m in client.get_metric_history(exported[0].mlflow_run_id, "eval_loss")] == [(3, 7.3)]
    tags = train.data.tags
    assert tags["lmforge.run_id"] == train_id and tags["lmforge.command"] == "train"
    assert tags["lmforge.input.corpus.hash"] == content_hash(corpus)  # input hashes travel
    assert tags["lmforge.model.trained.hash"] == "sha256:bb" and tags["lmforge.schema_version"] == "1"
    assert tags["lmforge.version.torch"] == record.versions["torch"]
    files = {a.path for a in client.list_artifacts(exported[0].mlflow_run_id)}
    assert files == {"lmforge_run.json", "loss.png"}
    local = Path(client.download_artifacts(exported[0].mlflow_run_id, "lmforge_run.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text())["result"]["steps"][0] == {"step": 1, "train_loss": 8.0}
    image = Path(client.download_artifacts(exported[0].mlflow_run_id, "loss.png", str(tmp_path / "dl")))
    assert image.read_bytes() == plot.read_bytes()

    compress = by_id[compress_id]
    assert compress.data.metrics == {"wikitext2.ppl": 24.1, "base.wikitext2.ppl": 21.9, "compress_seconds": 61.0}
    assert compress.data.params["group_size"] == "64" and compress.data.tags["lmforge.model.base.hash"] == "sha256:aa"

    again = export_runs(store.list(limit=None), uri)  # exporting twice does not duplicate
    assert all(e.skipped for e in again)
    assert len(client.search_runs([train.info.experiment_id])) == 2


def test_the_cli_exports_the_chosen_runs(tmp_path):
    from typer.testing import CliRunner

    from lmforge.cli.main import app

    store, _, compress_id, _, _ = _store(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    result = CliRunner().invoke(app, ["runs", "export", "--to", "mlflow", "--tracking-uri", uri, "--store",
                                      str(store.path), "compress"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lmforge").experiment_id])
    assert [r.data.tags["lmforge.run_id"] for r in runs] == [compress_id]
