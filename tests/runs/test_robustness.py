"""The run store under faults: damaged files, killed commands, stores that cannot be written, two writers at once."""

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import lmforge
from lmforge.errors import LmforgeError
from lmforge.runs import RunStore, record_run

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(lmforge.__file__).parents[1]),
                                                    os.environ.get("PYTHONPATH", "")])}


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmforge.cli.main", *args], env=ENV, text=True, capture_output=True,
                          timeout=120)


def _store_with_runs(path: Path, n: int = 30) -> RunStore:
    store = RunStore(path)
    for i in range(n):
        with record_run("eval", config={"i": i, "text": "x" * 500}, store=store, measure_energy=False) as run:
            run.log_metrics({"wikitext2.ppl": 20.0 + i})
    return store


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _truncated(path: Path) -> None:
    _store_with_runs(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "something").write_text("x")


@pytest.mark.parametrize("damage", [_random_bytes, _truncated, _folder], ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_store_is_named_in_one_line_with_the_way_out(damage, tmp_path):
    path = tmp_path / "runs.sqlite"
    damage(path)
    with pytest.raises(LmforgeError, match=r"move it aside \(mv ") as caught:
        RunStore(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    started = []
    with pytest.raises(LmforgeError, match="move it aside"):
        with record_run("compress", store=path, measure_energy=False):
            started.append(True)  # never: the store is checked before any work
    assert not started
    shown = _cli("runs", "list", "--store", str(path))
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert shown.stderr.count("\n") == 1 and shown.stderr.startswith("error:") and "move it aside" in shown.stderr


_SLEEPER = """
import sys, time
from lmforge.runs import RunStore, record_run
with record_run("train", config={"steps": 1000}, store=RunStore(sys.argv[1]), measure_energy=False) as run:
    print(run.id, flush=True)
    time.sleep(120)
"""


def test_a_command_killed_with_sigkill_is_marked_killed_at_the_next_start(tmp_path):
    path = tmp_path / "runs.sqlite"
    proc = _python(_SLEEPER, str(path))
    run_id = proc.stdout.readline().strip()
    try:
        assert RunStore(path).get(run_id).status == "running"  # a live run is left alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    record = RunStore(path).get(run_id)
    assert record.status == "killed" and f"process {proc.pid} ended without finishing" in record.error
    assert not (tmp_path / "locks" / f"{run_id}.lock").exists()
    listed = _cli("runs", "list", "--store", str(path))
    assert listed.returncode == 0 and "killed" in listed.stdout


def _read_only(self):
    db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def _full_disk(self):
    """SQLite's own 'database or disk is full': the file may not grow past the pages it has."""
    db = sqlite3.connect(self.path, timeout=30)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    return db


@pytest.mark.parametrize("fault", [_read_only, _full_disk], ids=["read-only", "full disk"])
def test_a_store_that_cannot_be_written_costs_a_warning_not_the_results(fault, tmp_path, monkeypatch, caplog):
    path = tmp_path / "runs.sqlite"
    before = [r.id for r in _store_with_runs(path, 2).list()]
    monkeypatch.setattr(RunStore, "_connect", fault)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with caplog.at_level(logging.WARNING, logger="lmforge.runs.store"):
        with record_run("eval", config={"notes": "y" * 20000}, store=RunStore(path), measure_energy=False) as run:
            run.log_metrics({"wikitext2.ppl": 12.5})
            computed = {"ppl": 12.5}
    assert computed == {"ppl": 12.5}  # the block ran to its end, no traceback
    assert run.artifacts_dir.parent == tmp_path / "tmp" / "lmforge-artifacts"  # outputs go where they can be written
    warnings = [r.getMessage() for r in caplog.records]
    assert any("cannot be written" in w and "not recorded" in w for w in warnings), warnings
    kept = json.loads((tmp_path / "tmp" / "lmforge-unsaved-runs" / f"{run.id}.json").read_text())
    assert kept["metrics"] == {"wikitext2.ppl": 12.5} and kept["status"] == "ok"
    monkeypatch.undo()
    assert [r.id for r in RunStore(path).list()][-2:] == before  # what was recorded before is intact


def test_a_store_folder_that_cannot_be_created_warns_and_the_command_goes_on(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="lmforge.runs.store"):
        with record_run("eval", store=blocker / "runs.sqlite", measure_energy=False) as run:
            run.log_metrics({"acc": 0.5})
    assert run.record.status == "ok" and any("cannot be created" in r.getMessage() for r in caplog.records)


_WRITER = """
import sys, time
from lmforge.runs import RunStore, record_run
path, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))  # both writers start together
for i in range(40):
    with record_run("eval", config={"writer": name, "i": i}, store=RunStore(path), measure_energy=False) as run:
        run.log_metrics({"i": i})
"""


def test_two_processes_writing_one_store_lose_no_record(tmp_path):
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:  # an old-layout store, so both also race to migrate it
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, status TEXT NOT NULL, "
                   "started REAL NOT NULL, ended REAL, host TEXT, config TEXT NOT NULL DEFAULT '{}', inputs TEXT NOT "
                   "NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}', energy TEXT NOT NULL DEFAULT '{}', versions "
                   "TEXT NOT NULL DEFAULT '{}', artifacts TEXT NOT NULL DEFAULT '{}', error TEXT)")
    start = str(time.time() + 3)
    writers = [_python(_WRITER, str(path), name, start) for name in ("a", "b")]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0 and "not recorded" not in err, err
    runs = RunStore(path).list(limit=None)
    assert len(runs) == 80 and {r.status for r in runs} == {"ok"}
    assert sorted((r.config["writer"], r.config["i"]) for r in runs) == sorted(
        (name, i) for name in ("a", "b") for i in range(40))
