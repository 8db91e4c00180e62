"""SQLite run store.

One row per command: what it was asked (config), what it read (inputs with
content hashes), what it measured (metrics, and the typed result with its
schema version), what it cost (energy), which software did it (versions),
where and when, and what it wrote (artifacts).

The file is shared by every command in a project, so it is opened in WAL mode
with a busy timeout (concurrent commands queue instead of failing), a running
command holds a lock file (a command killed with SIGKILL is marked ``killed``
at the next start), a damaged file is named with the way out, and a store that
cannot be written never costs a command its results.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import platform
import socket
import sqlite3
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from lmforge.errors import LmforgeError
from lmforge.io import pid_alive
from lmforge.paths import home_dir
from lmforge.runs import legacy
from lmforge.runs.hashing import content_hash
from lmforge.runs.results import SCHEMA_VERSION, Result, result_from_dict

log = logging.getLogger(__name__)

# PRAGMA user_version 0: the first layout (no result, schema_version or pid columns); 2: this one.
STORE_VERSION = 2
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
    error TEXT,
    result TEXT,
    schema_version INTEGER,
    pid INTEGER
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""
_ADDED_IN_2 = (("result", "TEXT"), ("schema_version", "INTEGER"), ("pid", "INTEGER"))

_VERSIONED = ("lmforge", "torch", "transformers", "tokenizers", "safetensors", "peft", "gguf", "numpy")
_JSON_COLUMNS = ("config", "inputs", "metrics", "energy", "versions", "artifacts")
_WRITE_FAILURES = ("readonly", "read-only", "disk is full", "unable to open", "disk i/o", "locked", "no such table")


def _retry_locked(statement, seconds: float = 30.0):
    """Run ``statement``, waiting while another process holds the lock: switching the journal mode (and, in some
    SQLite builds, BEGIN IMMEDIATE) answers "database is locked" at once instead of calling the busy handler."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


class RunStoreUnwritable(LmforgeError):
    """The store exists and reads, or could exist, but this process cannot write it (read-only, full disk ...)."""


def _damaged(path: Path, why: str) -> LmforgeError:
    return LmforgeError(f"the run store {path} is damaged ({why}); move it aside (mv {path} {path}.damaged) and "
                        "rerun: a new, empty store is created")


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
    result: Result | None = None  # the typed result (lmforge.runs.results), when the command has one
    schema_version: int | None = None  # of ``result``
    pid: int | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def started_iso(self) -> str:
        return dt.datetime.fromtimestamp(self.started, dt.timezone.utc).isoformat(timespec="seconds")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "result": self.result.to_dict() if self.result else None, "seconds": self.seconds,
                "started_iso": self.started_iso}

    def to_row(self) -> dict[str, Any]:
        row = {k: (json.dumps(v, default=str) if k in _JSON_COLUMNS else v) for k, v in self.__dict__.items()}
        row["result"] = json.dumps(self.result.to_dict(), default=str) if self.result else None
        row["schema_version"] = SCHEMA_VERSION if self.result else None
        return row


class RunStore:
    """The embedded run database (default ``.lmforge/runs.sqlite`` under the working directory).

    Opening it checks the file (a damaged one raises LmforgeError with the way out), migrates an older
    layout, and marks runs whose process died without finishing as ``killed``.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else home_dir() / "runs.sqlite"
        if self.path.is_dir():
            raise LmforgeError(f"the run store {self.path} is a folder, not a SQLite file; move it aside "
                               f"(mv {self.path} {self.path}.moved) and rerun: a new store is created")
        self.read_only = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._session() as db:
                self._prepare(db)
        except RunStoreUnwritable:
            if not self.path.is_file():
                raise
            self.read_only = True  # an existing store in a folder we cannot write still reads
            with self._session() as db:
                db.execute("SELECT count(*) FROM runs").fetchone()
        except OSError as exc:
            raise RunStoreUnwritable(f"the run store {self.path} cannot be created ({exc.strerror or exc})") from exc
        if not self.read_only:
            self.mark_killed()

    @property
    def artifacts_dir(self) -> Path:
        return self.path.parent / "artifacts"

    @property
    def locks_dir(self) -> Path:
        return self.path.parent / "locks"

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """A connection whose SQLite errors become one-line errors: damaged file, or cannot write."""
        try:
            with contextlib.closing(self._connect()) as db, db:
                yield db
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if isinstance(exc, sqlite3.OperationalError) and any(s in text.lower() for s in _WRITE_FAILURES):
                raise RunStoreUnwritable(f"the run store {self.path} cannot be written ({text})") from exc
            raise _damaged(self.path, text) from exc

    def _prepare(self, db: sqlite3.Connection) -> None:
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise _damaged(self.path, check)
        if db.execute("PRAGMA user_version").fetchone()[0] > STORE_VERSION:
            raise LmforgeError(f"the run store {self.path} was written by a newer lmforge; upgrade lmforge to read it")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))  # readers never block the one writer
        if db.execute("PRAGMA user_version").fetchone()[0] == STORE_VERSION:
            return
        _retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))  # one process creates or migrates; the others wait, then find it done
        if db.execute("PRAGMA user_version").fetchone()[0] < STORE_VERSION:
            columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            if columns:
                self._migrate(db, columns)
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {STORE_VERSION}")
        db.commit()

    def _migrate(self, db: sqlite3.Connection, columns: set[str]) -> None:
        """Layout 0 → 2: add the result columns, and give each finished old run its typed result."""
        for name, kind in _ADDED_IN_2:
            if name not in columns:
                db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
        for row in db.execute("SELECT * FROM runs WHERE result IS NULL").fetchall():
            record = self._record(row)
            if (result := legacy.upgrade(record)) is not None:
                db.execute("UPDATE runs SET result = ?, schema_version = ? WHERE id = ?",
                           (json.dumps(result.to_dict(), default=str), SCHEMA_VERSION, record.id))

    def insert(self, record: RunRecord) -> None:
        row = record.to_row()
        with self._session() as db:
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       tuple(row.values()))

    def _record(self, row: sqlite3.Row) -> RunRecord:
        values = {k: (json.loads(row[k]) if k in _JSON_COLUMNS else row[k]) for k in row.keys()}
        result = values.pop("result", None)
        record = RunRecord(**values)
        if result:
            record.result = result_from_dict(json.loads(result), record.schema_version or SCHEMA_VERSION)
        elif self.read_only and "result" not in row.keys():  # an old store we may read but not migrate
            record.result = legacy.upgrade(record)
        return record

    def list(self, limit: int | None = 20, command: str | None = None) -> list[RunRecord]:
        query = "SELECT * FROM runs" + (" WHERE command = ?" if command else "") + " ORDER BY started DESC"
        params: tuple = (command,) if command else ()
        if limit:
            query += f" LIMIT {int(limit)}"
        with self._session() as db:
            return [self._record(row) for row in db.execute(query, params)]

    def get(self, run_id: str) -> RunRecord:
        """A run by id, a unique id prefix, or 'latest'."""
        with self._session() as db:
            if run_id == "latest":
                rows = db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT 1").fetchall()
            else:
                rows = db.execute("SELECT * FROM runs WHERE id LIKE ? ORDER BY started DESC", (run_id + "%",)).fetchall()
            if not rows:
                raise LmforgeError(f"no run '{run_id}' in {self.path}; `lmforge runs list` shows the recorded runs")
            if len(rows) > 1:
                raise LmforgeError(f"run id prefix '{run_id}' matches {len(rows)} runs; give more characters")
            return self._record(rows[0])

    def mark_killed(self) -> list[str]:
        """Runs still 'running' whose process is gone (its lock file is free) become 'killed'; their ids."""
        killed = []
        with self._session() as db:
            rows = db.execute("SELECT id, host, pid FROM runs WHERE status = 'running'").fetchall()
        for run_id, host, pid in rows:
            if pid is None or not (host or "").startswith(socket.gethostname() + " "):
                continue  # a run of an older lmforge (no lock), or of another machine sharing the file
            if _owner_alive(self.locks_dir / f"{run_id}.lock", pid):
                continue
            with self._session() as db:
                changed = db.execute(
                    "UPDATE runs SET status = 'killed', error = ? WHERE id = ? AND status = 'running'",
                    (f"process {pid} ended without finishing the run (killed, e.g. by SIGKILL or a power loss)",
                     run_id)).rowcount
            with contextlib.suppress(OSError):
                (self.locks_dir / f"{run_id}.lock").unlink()
            if changed:
                killed.append(run_id)
        return killed


def _owner_alive(lock: Path, pid: int) -> bool:
    """Whether the process that recorded a run still holds its lock file (no lock file: whether the pid lives)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return pid_alive(pid)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock we may have taken
    return False


class Run:
    """A run being recorded; metrics, artifacts and its typed result are added while it works."""

    def __init__(self, store: RunStore | None, command: str, config: dict[str, Any], inputs: dict[str, Any]):
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
            pid=os.getpid(),
        )

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def artifacts_dir(self) -> Path:
        """A folder for this run's outputs: .lmforge/artifacts/<run id>/ (a temporary folder without a store)."""
        base = self.store.artifacts_dir if self.store else Path(tempfile.gettempdir()) / "lmforge-artifacts"
        path = base / self.id
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

    def log_result(self, result: Result) -> None:
        """Record a typed result: stored as is (with its schema version), and its metrics, inputs (with hashes)
        and outputs are merged into the run's flat columns for the run list, run diffs and the MLflow export."""
        self.record.result = result
        self.record.metrics.update(result.metrics())
        self.record.inputs.update(result.inputs())
        for name, path in result.outputs().items():
            self.add_artifact(name, path)


def describe_input(value: Any) -> Any:
    """A path becomes {'path', 'hash'}; anything else is kept as given."""
    if isinstance(value, (str, os.PathLike)) and Path(value).exists():
        return {"path": str(Path(value).resolve()), "hash": content_hash(value)}
    return value


def _hold_lock(store: RunStore, run_id: str) -> int | None:
    """Take the run's lock file; the kernel frees it when the process dies, however it dies."""
    with contextlib.suppress(OSError):
        store.locks_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(store.locks_dir / f"{run_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd
    return None


def _release_lock(store: RunStore, run_id: str, fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            (store.locks_dir / f"{run_id}.lock").unlink()
        os.close(fd)


def _save_aside(record: RunRecord) -> Path | None:
    """Where a run that the store could not take is kept: a JSON file in the temporary folder."""
    with contextlib.suppress(OSError):
        folder = Path(tempfile.gettempdir()) / "lmforge-unsaved-runs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{record.id}.json"
        path.write_text(json.dumps(record.to_dict(), default=str, indent=1), encoding="utf-8")
        return path
    return None


@contextlib.contextmanager
def record_run(
    command: str,
    config: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    store: RunStore | str | os.PathLike | None = None,
    measure_energy: bool = True,
) -> Iterator[Run]:
    """Record one command in the run store; the row is written even if the block fails.

    Inside the block, ``run.log_result(<typed result>)`` records what the command produced; a command that
    logs only flat metrics gets its typed result derived from them (``lmforge.runs.legacy``).
    A store that cannot be written (read-only folder, full disk) is warned about in one line and the
    command goes on: its results are printed and saved as usual, and the run record is kept as JSON in the
    temporary folder. A damaged store raises LmforgeError before any work starts.
    Energy is measured around the block with ``lmforge.energy`` when that module is present.
    """
    try:
        store = store if isinstance(store, RunStore) else RunStore(store)
        if store.read_only:
            raise RunStoreUnwritable(f"the run store {store.path} is in a folder this process cannot write")
    except RunStoreUnwritable as exc:
        log.warning("%s; this run is not recorded (its results are still printed and saved)", exc)
        store = None
    run = Run(store, command, dict(config or {}), {k: describe_input(v) for k, v in (inputs or {}).items()})
    lock = _hold_lock(store, run.id) if store else None
    if store is not None and _write(store, run.record) is None:  # nothing stored: artifacts go to a temporary folder
        _release_lock(store, run.id, lock)
        lock = store = run.store = None
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
        if run.record.result is None:
            with contextlib.suppress(Exception):  # a best effort: the flat columns are kept whatever happens
                run.record.result = legacy.upgrade(run.record)
        if _write(store, run.record) is None and (aside := _save_aside(run.record)):
            log.warning("run %s is kept in %s", run.id, aside)
        if store is not None:
            _release_lock(store, run.id, lock)


def _write(store: RunStore | None, record: RunRecord) -> RunStore | None:
    """Write the record; on a store that cannot be written, warn once and go on without it (returns None)."""
    if store is None:
        return None
    try:
        store.insert(record)
        return store
    except RunStoreUnwritable as exc:
        log.warning("%s; run %s is not recorded there (its results are still printed and saved)", exc, record.id)
        return None
