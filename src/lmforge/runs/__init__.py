"""The run store: every command records what went in, its settings, what came out and what it cost."""

from lmforge.runs.hashing import content_hash
from lmforge.runs.store import Run, RunRecord, RunStore, record_run

__all__ = ["Run", "RunRecord", "RunStore", "content_hash", "record_run"]
