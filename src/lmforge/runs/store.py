"""SQLite run store.

One row per command: what it was asked (config), what it read (inputs with
content hashes), what it measured (metrics), what it cost (energy), which
software did it (versions), where and when, and what it wrote (artifacts).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import socket
import sqlite3
import time
import traceback
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from lmforge.errors import LmforgeError
from lmforge.paths import home_dir
from lmforge.runs.hashing import content_hash

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    host TEXT,
    config TEXT NOT NULL DEFAULT '{}',
    inputs TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    energy TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    artifacts TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""

_VERSIONED = ("lmforge", "torch", "transformers", "tokenizers", "safetensors", "peft", "gguf", "numpy")
_JSON_COLUMNS = ("config", "inputs", "metrics", "energy", "versions", "artifacts")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


@dataclass
class RunRecord:
    """A stored run, as read back from the store."""

    id: str
    command: str
    status: str
    started: float
    ended: float | None
    host: str | None
    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    energy: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def started_iso(self) -> str:
        return dt.datetime.fromtimestamp(self.started, dt.timezone.utc).isoformat(timespec="seconds")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "seconds": self.seconds, "started_iso": self.started_iso}


class RunStore:
    """The embedded run database (default ``.lmforge/runs.sqlite`` under the working directory)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else home_dir() / "runs.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @property
    def artifacts_dir(self) -> Path:
        return self.path.parent / "artifacts"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def insert(self, record: RunRecord) -> None:
        row = {k: (json.dumps(v, default=str) if k in _JSON_COLUMNS else v) for k, v in record.__dict__.items()}
        with contextlib.closing(self._connect()) as db, db:
            db.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )

    def _record(self, row: sqlite3.Row) -> RunRecord:
        values = {k: (json.loads(row[k]) if k in _JSON_COLUMNS else row[k]) for k in row.keys()}
        return RunRecord(**values)

    def list(self, limit: int | None = 20, command: str | None = None) -> list[RunRecord]:
        query = "SELECT * FROM runs" + (" WHERE command = ?" if command else "") + " ORDER BY started DESC"
        params: tuple = (command,) if command else ()
        if limit:
            query += f" LIMIT {int(limit)}"
        with contextlib.closing(self._connect()) as db:
            return [self._record(row) for row in db.execute(query, params)]

    def get(self, run_id: str) -> RunRecord:
        """A run by id, a unique id prefix, or 'latest'."""
        with contextlib.closing(self._connect()) as db:
            if run_id == "latest":
                rows = db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT 1").fetchall()
            else:
                rows = db.execute("SELECT * FROM runs WHERE id LIKE ? ORDER BY started DESC", (run_id + "%",)).fetchall()
        if not rows:
            raise LmforgeError(f"no run '{run_id}' in {self.path}; `lmforge runs list` shows the recorded runs")
        if len(rows) > 1:
            raise LmforgeError(f"run id prefix '{run_id}' matches {len(rows)} runs; give more characters")
        return self._record(rows[0])


class Run:
    """A run being recorded; metrics and artifacts are added while it works."""

    def __init__(self, store: RunStore, command: str, config: dict[str, Any], inputs: dict[str, Any]):
        self.store = store
        self.record = RunRecord(
            id=dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
            command=command,
            status="running",
            started=time.time(),
            ended=None,
            host=f"{socket.gethostname()} ({platform.system()} {platform.machine()}, {os.cpu_count()} cpus)",
            config=config,
            inputs=inputs,
            versions=package_versions(),
        )

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def artifacts_dir(self) -> Path:
        """A folder for this run's outputs: .lmforge/artifacts/<run id>/."""
        path = self.store.artifacts_dir / self.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        self.record.metrics.update(metrics)

    def log_energy(self, energy: dict[str, Any]) -> None:
        self.record.energy.update(energy)

    def add_input(self, name: str, value: Any) -> None:
        self.record.inputs[name] = describe_input(value)

    def add_artifact(self, name: str, path: str | os.PathLike) -> None:
        self.record.artifacts[name] = str(Path(path).resolve())


def describe_input(value: Any) -> Any:
    """A path becomes {'path', 'hash'}; anything else is kept as given."""
    if isinstance(value, (str, os.PathLike)) and Path(value).exists():
        return {"path": str(Path(value).resolve()), "hash": content_hash(value)}
    return value


@contextlib.contextmanager
def record_run(
    command: str,
    config: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    store: RunStore | None = None,
    measure_energy: bool = True,
) -> Iterator[Run]:
    """Record one command in the run store; the row is written even if the block fails.

    Energy is measured around the block with ``lmforge.energy`` when that module is present.
    """
    store = store or RunStore()
    run = Run(store, command, dict(config or {}), {k: describe_input(v) for k, v in (inputs or {}).items()})
    store.insert(run.record)
    meter = None
    if measure_energy:
        with contextlib.suppress(ImportError):
            from lmforge.energy import EnergyMeter  # measured where lmforge.energy exists

            meter = EnergyMeter(run_id=run.id)
            meter.start()
    try:
        yield run
        run.record.status = "ok"
    except BaseException as exc:
        run.record.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        run.record.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        if meter is not None:
            with contextlib.suppress(Exception):
                run.log_energy(meter.stop())
        run.record.ended = time.time()
        store.insert(run.record)
