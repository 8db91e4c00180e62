"""Content hashes of inputs (files and folders), so a run says exactly what it read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20
# (path, size, mtime_ns) -> digest; files such as model weights are hashed once per process.
_memo: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _memo:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _memo[key] = digest.hexdigest()
    return _memo[key]


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's sorted (relative path, file hash) pairs; 'sha256:<hex>'."""
    path = Path(path)
    if path.is_file():
        return "sha256:" + _file_digest(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(_file_digest(file).encode())
        return "sha256:" + digest.hexdigest()
    raise FileNotFoundError(path)


def text_hash(text: str) -> str:
    """sha256 of a string (for inputs that are not files, such as a prompt)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
