"""What every results JSON carries: commit (+ dirty flag), package versions, input hashes, machine, date, command."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from lmforge.runs.hashing import content_hash
from lmforge.runs.store import package_versions

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(inputs: dict[str, str | os.PathLike] | None = None, packages: tuple[str, ...] = (),
               peers: dict[str, str] | None = None) -> dict:
    """``inputs``: name -> file or folder to hash; ``packages``: extra distributions to version; ``peers``: name ->
    version string of peer tools run from their own venvs."""
    import torch

    versions = package_versions()
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain")),
        "versions": versions, "peers": peers or {},
        "inputs": {name: {"path": str(path), "hash": content_hash(path)} for name, path in (inputs or {}).items()},
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
