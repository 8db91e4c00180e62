"""The fault-injection suite's tools: run `lmforge` as a user would (through ``main``, which turns an lmforge error
into one line), and fingerprint a folder so a test can show that nothing there changed."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def tree_hash(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path → sha256), folders included by name: any change shows."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink() or not path.is_file():
            found[key] = "folder" if path.is_dir() else "other"
        else:
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def lmforge(capsys, monkeypatch):
    """``lmforge("compress", ...)``: the exit code and what it printed, run in this process through ``main()``.

    Anything but SystemExit escaping ``main`` is a traceback the user would see: it fails the test as it is."""
    from lmforge.cli.main import main

    def run(*args) -> Outcome:
        monkeypatch.setattr(sys, "argv", ["lmforge", *map(str, args)])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        printed = capsys.readouterr()
        return Outcome(code, printed.out, printed.err)

    return run


def assert_one_line_error(outcome: Outcome, code: int = 2, match: str | None = None) -> None:
    """The right exit code, no traceback, and the error as one `error: ...` line (click's usage errors: its box)."""
    text = outcome.out + outcome.err
    assert outcome.code == code, text[-2000:]
    assert "Traceback" not in text
    errors = [line for line in outcome.error_lines if line.startswith("error:") or line.lstrip("│ ").startswith("Error") or
              "Invalid value" in line or "No such option" in line or "Missing" in line]
    assert errors, text[-2000:]
    if outcome.error_lines[0].startswith("error:"):
        assert len([line for line in outcome.error_lines if not line.startswith(("WARNING", "note:"))]) == 1, text
    if match:
        assert match in text, text[-2000:]


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """The user's project folder (the working directory) with things a careless -o could destroy."""
    root = tmp_path / "project"
    (root / "d").mkdir(parents=True)
    (root / "d" / "keep").write_text("my notes\n")
    (root / "results").mkdir()
    (root / "afile").write_text("not a folder\n")
    (root / "existing.gguf").write_bytes(b"GGUF-but-mine")
    (root / "corpus.txt").write_text(("Rocks are worn down by wind and water. " * 20 + "\n") * 10)
    monkeypatch.chdir(root)
    return root
