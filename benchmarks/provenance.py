"""Provenance of a benchmark result: what code, software, model, data and machine produced it, when, and how.

Every script in benchmarks/ writes its JSON through ``save_result``, so each file in benchmarks/results/ says which
commit (and whether the tree was dirty), which torch/transformers/peer versions, which model weights (source and
content hash), which data files (hashes), which CPU with how many cores and threads, the date and the exact command.
tests/test_benchmark_results.py fails on any results file without these fields.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch

from lmforge.cli.common import save_json
from lmforge.models import model_input
from lmforge.runs.hashing import content_hash

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("commit", "dirty", "versions", "models", "data", "machine", "date", "command")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


# the code that runs is the code at start: a commit made while a long benchmark runs must not be recorded as its own
_AT_START = {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
             "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peer_version(python: str | os.PathLike, package: str) -> str | None:
    """``package``'s version inside a peer's own venv (None when that venv or package is missing)."""
    try:
        result = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                                capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return result.stdout.strip() or None


def describe_model(source: str | os.PathLike) -> dict[str, Any]:
    recorded = model_input(source)
    if isinstance(recorded, dict):  # a zoo name: its weights and their hash
        return recorded
    path = Path(recorded)
    if path.exists():
        return {"path": str(path.resolve()), "hash": content_hash(path)}
    return {"hub_id": recorded, "hash": None}


def provenance(models: Iterable[str | os.PathLike] = (), data: Iterable[str | os.PathLike] = (),
               peers: dict[str, tuple[str | os.PathLike, str]] | None = None) -> dict[str, Any]:
    """``peers``: name -> (the peer venv's python, its package), e.g. {"llm-compressor": (".venv-llmcompressor/bin/python",
    "llmcompressor")}."""
    versions = {name: metadata.version(name) for name in ("torch", "transformers", "lmforge")}
    versions["python"] = platform.python_version()
    for name, (python, package) in (peers or {}).items():
        versions[name] = peer_version(python, package)
        if peer_torch := peer_version(python, "torch"):
            versions[f"{name} torch"] = peer_torch
    return {
        "commit": _AT_START["commit"],
        "dirty": _AT_START["dirty"],
        "started": _AT_START["started"],
        "versions": versions,
        "models": [describe_model(m) for m in models],
        "data": [{"path": str(Path(d).resolve()), "hash": content_hash(d)} for d in data],
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "system": f"{platform.system()} {platform.machine()}"},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
    }


def save_result(path: str | os.PathLike | None, result: dict[str, Any], **sources: Any) -> None:
    """Write ``result`` with its provenance (``sources``: models=, data=, peers= as for ``provenance``)."""
    if path:
        save_json(path, {"provenance": provenance(**sources), **result})
