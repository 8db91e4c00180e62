"""Runs leave lmforge: copy recorded runs into an MLflow tracking store (the field's tracker).

Each run becomes an MLflow run in one experiment, with its settings as params,
its numeric metrics (and a per-step history for training runs), its command,
status, host, versions and input hashes as tags, and its files as artifacts
(plus the whole lmforge record as ``lmforge_run.json``). Model folders are
referenced by path and content hash rather than copied. Exporting twice does
not duplicate: a run already in the experiment (tag ``lmforge.run_id``) is skipped.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lmforge.errors import LmforgeError
from lmforge.runs.store import RunRecord

EXPERIMENT = "lmforge"
_STATUS = {"ok": "FINISHED", "failed": "FAILED", "killed": "KILLED", "interrupted": "KILLED", "running": "RUNNING"}
_PARAM_LIMIT = 6000  # MLflow rejects longer param values
_BAD_NAME = re.compile(r"[^\w\-. /]")  # MLflow names allow alphanumerics, _ - . space and /
_BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics and 100 params per call


@dataclass
class Exported:
    run_id: str  # lmforge's
    mlflow_run_id: str
    skipped: bool  # it was already there


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        found: dict[str, Any] = {}
        for key, value in data.items():
            found.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return found
    return {prefix: data}


def _name(text: str) -> str:
    return _BAD_NAME.sub("_", text)[:250]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def params_of(record: RunRecord) -> dict[str, str]:
    """The run's settings: its config, and the typed result's recipe/settings, flattened to strings."""
    settings: dict[str, Any] = dict(record.config)
    result = record.result
    for name in ("recipe", "settings"):
        if result is not None and isinstance(getattr(result, name, None), dict):
            settings.update(getattr(result, name))
    return {_name(k): (json.dumps(v, default=str) if not isinstance(v, str) else v)[:_PARAM_LIMIT]
            for k, v in _flat(settings).items()}


def metrics_of(record: RunRecord) -> dict[str, float]:
    """Every finite numeric metric the run recorded, flattened."""
    return {_name(k): float(v) for k, v in _flat(record.metrics).items() if _is_number(v)}


def tags_of(record: RunRecord) -> dict[str, str]:
    tags = {"lmforge.run_id": record.id, "lmforge.command": record.command, "lmforge.status": record.status,
            "mlflow.runName": f"{record.command} {record.id}"}
    if record.host:
        tags["lmforge.host"] = record.host
    if record.error:
        tags["lmforge.error"] = record.error[:_PARAM_LIMIT]
    if record.result is not None:
        tags["lmforge.result_kind"] = record.result.kind
        tags["lmforge.schema_version"] = str(record.schema_version)
        for role, model in record.result.models():
            for field in ("name", "hash", "architecture", "parameters", "dtype"):
                if getattr(model, field) is not None:
                    tags[f"lmforge.model.{role}.{field}"] = str(getattr(model, field))
    tags.update({f"lmforge.version.{k}": str(v) for k, v in record.versions.items()})
    for name, value in _flat(record.inputs).items():  # input paths and content hashes
        if value is not None:
            tags[_name(f"lmforge.input.{name}")] = str(value)[:_PARAM_LIMIT]
    for name, path in record.artifacts.items():
        tags[_name(f"lmforge.artifact.{name}")] = str(path)
    return tags


def history_of(record: RunRecord) -> list[tuple[str, float, int]]:
    """(metric, value, step) for every logged step of a training run."""
    steps = record.result.history() if record.result is not None else []
    return [(_name(key), float(value), int(point["step"])) for point in steps
            for key, value in point.items() if key != "step" and _is_number(value)]


def export_runs(records: Iterable[RunRecord], tracking_uri: str | None = None,
                experiment: str = EXPERIMENT) -> list[Exported]:
    """Write ``records`` to MLflow at ``tracking_uri`` (default: $MLFLOW_TRACKING_URI, else ./mlruns)."""
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise LmforgeError("the MLflow export needs mlflow: pip install 'lmforge[mlflow]'") from None
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
    if uri.startswith("file:") or "://" not in uri and uri != "databricks":
        # MLflow 3 keeps its file store in maintenance mode behind this switch; a folder is what the user asked for
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    exported = []
    for record in records:
        existing = client.search_runs([experiment_id], filter_string=f"tags.`lmforge.run_id` = '{record.id}'")
        if existing:
            exported.append(Exported(record.id, existing[0].info.run_id, skipped=True))
            continue
        start = int(record.started * 1000)
        run = client.create_run(experiment_id, start_time=start, tags=tags_of(record),
                                run_name=f"{record.command} {record.id}")
        run_id = run.info.run_id
        when = int((record.ended or record.started) * 1000)
        metrics = [Metric(k, v, when, 0) for k, v in metrics_of(record).items()]
        metrics += [Metric(k, v, start, step) for k, v, step in history_of(record)]
        params = [Param(k, v) for k, v in params_of(record).items()]
        for i in range(0, len(metrics), _BATCH):
            client.log_batch(run_id, metrics=metrics[i:i + _BATCH])
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        _log_artifacts(client, run_id, record)
        client.set_terminated(run_id, _STATUS.get(record.status, "FAILED"),
                              end_time=int(record.ended * 1000) if record.ended else None)
        exported.append(Exported(record.id, run_id, skipped=False))
    return exported


def _log_artifacts(client, run_id: str, record: RunRecord) -> None:
    """The run's files (plots, JSON reports, cards) and the full record; folders (models) stay referenced by tag."""
    with tempfile.TemporaryDirectory() as tmp:
        record_file = Path(tmp) / "lmforge_run.json"
        record_file.write_text(json.dumps(record.to_dict(), default=str, indent=1), encoding="utf-8")
        client.log_artifact(run_id, str(record_file))
    for path in record.artifacts.values():
        if Path(path).is_file():
            client.log_artifact(run_id, str(path))
