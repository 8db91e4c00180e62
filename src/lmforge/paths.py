"""Where lmforge keeps things: the user cache, the run store, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

from lmforge.errors import LmforgeError

# Repository root when running from a source checkout (src/lmforge/paths.py -> ../../..).
_REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """User cache for pulled models: $LMFORGE_CACHE, else $XDG_CACHE_HOME/lmforge, else ~/.cache/lmforge."""
    if env := os.environ.get("LMFORGE_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmforge"


def home_dir() -> Path:
    """Per-project state (run store, artifacts): $LMFORGE_HOME, else ./.lmforge."""
    return Path(os.environ.get("LMFORGE_HOME", ".lmforge")).expanduser()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The shared evaluation data: an explicit path, $LMFORGE_DATA_DIR, or ../shared/data beside the checkout."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit).expanduser())
    elif env := os.environ.get("LMFORGE_DATA_DIR"):
        candidates.append(Path(env).expanduser())
    else:
        candidates += [Path.cwd() / "../shared/data", Path.cwd() / "shared/data", _REPO_ROOT / "../shared/data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise LmforgeError(
        f"data folder not found (looked in {', '.join(str(c) for c in candidates)}); "
        "pass --data-dir or set LMFORGE_DATA_DIR to the folder holding wikitext2/, arc_easy/, ..."
    )
