"""Messages reach the user exactly as written: rich must not eat `[...]` (install hints name their extra in brackets)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lmforge.cli import common

SRC = Path(__file__).resolve().parents[2] / "src" / "lmforge"
HINT = re.compile(r"pip install '(lmforge\[(\w+)\])'")


def install_hints():
    """Every `pip install 'lmforge[extra]'` lmforge's code can print, with the extra it names."""
    return sorted({(match.group(0), match.group(2)) for path in SRC.rglob("*.py") for match in HINT.finditer(path.read_text())})


def test_the_source_has_install_hints_and_each_names_a_real_extra():
    hints = install_hints()
    extras = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"audit", "curate", "ray"} <= {extra for _, extra in hints}
    for _, extra in hints:
        assert extra in extras
    assert set(extras) - {"dev", "all"} <= set(re.findall(r"\w+", extras["all"][0].split("[", 1)[1]))


@pytest.mark.parametrize("hint,extra", install_hints())
def test_each_install_hint_prints_with_its_extra(hint, extra, capsys):
    common.print_error(f"this step needs it: {hint}")
    common.console.print(f"note: {hint}")
    printed = capsys.readouterr()
    assert f"error: this step needs it: {hint}" in printed.err
    assert f"note: {hint}" in printed.out
    assert f"lmforge[{extra}]" in printed.err


def test_a_table_cell_keeps_its_brackets(capsys):
    common.print_table("t", ["model", "value"], [("runs/[draft] model", "[1, 2]")])
    out = capsys.readouterr().out
    assert "runs/[draft] model" in out and "[1, 2]" in out


def run_without_vader(tmp_path, *args):
    """`lmforge audit ...` in a child process where importing VADER fails, as in a plain install."""
    script = ("import sys\nsys.modules['vaderSentiment'] = None\n"  # an import of it now raises ImportError
              f"from lmforge.cli.main import main\nsys.argv = ['lmforge', 'audit', *{list(args)!r}]\nmain()\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.slow
def test_audit_bias_in_a_plain_install_degrades_with_a_one_line_note(tmp_path, tiny_folder):
    result = run_without_vader(tmp_path, str(tiny_folder), "--suite", "bias", "--limit", "2", "--resamples", "20")
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert notes == ["note: no sentiment gap (VADER is not installed): pip install 'lmforge[audit]'"]


def test_asking_for_sentiment_without_vader_prints_the_hint_with_its_brackets(tmp_path, tiny_folder):
    result = run_without_vader(tmp_path, str(tiny_folder), "--suite", "bias", "--limit", "2", "--sentiment")
    assert result.returncode == 2
    assert "pip install 'lmforge[audit]'" in result.stderr and "Traceback" not in result.stderr
