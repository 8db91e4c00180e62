"""The usage log: one JSON line per request (tokens in and out, latency, guard hits; no raw text unless asked)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class UsageLog:
    """Append-only JSONL; each line is written with one ``write`` call under a lock, so lines never interleave."""

    def __init__(self, path: str | os.PathLike | None, log_text: bool = False):
        self.path = Path(path) if path else None
        self.log_text = log_text
        self.lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        if not self.log_text:
            entry = {k: v for k, v in entry.items() if k not in {"prompt", "completion"}}
        line = json.dumps(entry, default=str, ensure_ascii=False) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)


def read_usage(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
