"""Disks that refuse writes (read-only, full) and run stores that are damaged or shared by two commands at once."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, tree_hash

FAST = ["--method", "rtn", "--group-size", "32", "--seqlen", "16", "--eval-windows", "0", "--arc-limit", "0",
        "--speed-tokens", "0", "--threads", "1"]


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A small tmpfs at ``path`` when this machine lets us mount one, else None."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    except OSError:  # no mount program
        mounted = False
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], capture_output=True)


def read_only_folder(path: Path, stack: contextlib.ExitStack, monkeypatch) -> Path:
    """A folder no write reaches: a read-only tmpfs (root ignores permission bits), else mode 0500; as root where
    nothing can be mounted, the answer a read-only file system gives (os.access says no) for that folder."""
    if os.geteuid() == 0:
        mounted = stack.enter_context(tmpfs(path, "1m", read_only=True))
        if mounted is not None:
            return mounted
        path.mkdir()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *args, **kwargs: (
            False if mode & os.W_OK and Path(p).absolute().is_relative_to(path) else real(p, mode, *args, **kwargs)))
        return path
    path.mkdir()
    path.chmod(0o500)
    stack.callback(path.chmod, 0o700)
    return path


def test_a_read_only_output_folder_is_refused_before_any_work(lmforge, tiny_folder, tmp_path, workspace, monkeypatch):
    with contextlib.ExitStack() as stack:
        locked = read_only_folder(tmp_path / "ro", stack, monkeypatch)
        for args in (["-o", locked / "q"], ["--json", locked / "r.json"]):
            outcome = lmforge("compress", tiny_folder, "--calib", "corpus.txt", *FAST, *args)
            assert_one_line_error(outcome, 2, "cannot be written")
        outcome = lmforge("eval", tiny_folder, "--json", locked / "r.json")
        assert_one_line_error(outcome, 2, "cannot be written")


def run_limited(args, cwd: Path, max_file_bytes: int | None = None):
    """`lmforge ARGS` in a child whose files cannot grow past ``max_file_bytes`` (a full disk, for any user)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    code = "import sys; from lmforge.cli.main import main; sys.argv = ['lmforge', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit if max_file_bytes else None,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


@pytest.mark.parametrize("disk", ["file-size-limit", "small-tmpfs"])
def test_a_full_disk_at_the_end_fails_in_one_line_and_leaves_no_half_folder(disk, tiny_folder, tmp_path, workspace):
    (workspace / "old").mkdir()
    (workspace / "old" / "notes.txt").write_text("kept\n")
    before = tree_hash(workspace)
    with tmpfs(tmp_path / "small", "96k") as small:
        if disk == "small-tmpfs" and small is None:
            small, disk = None, "file-size-limit"  # no mount here: the same full disk, by a file-size limit
        out = (small if disk == "small-tmpfs" else workspace) / "q"
        result = run_limited(["compress", tiny_folder, "--calib", "corpus.txt", *FAST, "-o", out], workspace,
                             64 * 1024 if disk == "file-size-limit" else None)
        assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "could not write" in errors[0], result.stderr[-3000:]
        assert not out.exists() and not list(out.parent.glob(".q.*"))
    assert {k: v for k, v in tree_hash(workspace).items() if not k.startswith("q")} == before


@pytest.mark.parametrize("damage", ["random-bytes", "truncated", "a-folder", "empty-header"])
def test_a_damaged_run_store_is_one_line_that_says_how_to_move_it_aside(damage, lmforge, tmp_path, tiny_folder):
    store = tmp_path / "runs.sqlite"
    if damage == "a-folder":
        store.mkdir()
    elif damage == "random-bytes":
        store.write_bytes(os.urandom(8192))
    else:
        with sqlite3.connect(store) as db:
            db.execute("CREATE TABLE runs (id TEXT)")
            db.executemany("INSERT INTO runs VALUES (?)", [(str(i) * 50,) for i in range(2000)])
        data = store.read_bytes()
        store.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\0" * 100 + data[100:])
    before = tree_hash(tmp_path) if store.is_dir() else store.read_bytes()
    outcome = lmforge("runs", "list", "--store", store)
    assert_one_line_error(outcome, 2, "mv ")
    os.environ["LMFORGE_HOME"] = str(tmp_path)  # the store every command opens (the autouse fixture restores it)
    outcome = lmforge("compress", tiny_folder, "--calib", tiny_folder / "config.json", *FAST, "-o", tmp_path / "q")
    assert_one_line_error(outcome, 2, "move it aside")
    assert not (tmp_path / "q").exists()
    assert (tree_hash(tmp_path) if store.is_dir() else store.read_bytes()) == before


def test_two_commands_at_once_on_one_run_store_both_record(tmp_path, lmforge):
    corpus = tmp_path / "in.txt"
    corpus.write_text(("Rocks are worn down by wind and water over many years. " * 8 + "\n\n") * 20)
    pipelines = []
    for name in ("a", "b"):
        pipelines.append(tmp_path / f"{name}.yaml")
        pipelines[-1].write_text(f"input:\n  paths: [{corpus}]\nsteps: [exact_dedup, gopher_quality]\n"
                                 f"output:\n  dir: {tmp_path / name}\n")
    code = "import sys; from lmforge.cli.main import main; sys.argv = ['lmforge', *sys.argv[1:]]; main()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    children = [subprocess.Popen([sys.executable, "-c", code, "data", "run", str(p), "--workers", "1"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in pipelines]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0 and "Traceback" not in err, (out + err)[-3000:]
    from lmforge.runs import RunStore

    runs = RunStore().list(command="data run")
    assert sorted(r.status for r in runs) == ["ok", "ok"] and len({r.id for r in runs}) == 2


def test_results_that_cannot_be_saved_at_the_end_are_printed_and_the_exit_is_1(lmforge, tiny_folder, workspace, monkeypatch):
    import errno

    import lmforge.cli.common as common

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(common, "write_json", disk_full)
    outcome = lmforge("eval", tiny_folder, "--task", "corpus.txt", "--limit", "1", "--seqlen", "32", "--json", "r.json")
    assert outcome.code == 1 and "Traceback" not in outcome.out + outcome.err
    assert outcome.error_lines == ["error: could not write r.json (No space left on device); the results are printed above"]
    assert '"perplexity"' in outcome.out or "perplexity" in outcome.out
    assert not (workspace / "r.json").exists()
