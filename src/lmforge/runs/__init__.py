"""The run store: every command records what went in, its settings, what came out and what it cost."""

from lmforge.runs.hashing import content_hash
from lmforge.runs.results import (
    SCHEMA_VERSION, AuditResult, CompressionResult, CurationResult, DataRef, EvalResult, Measured, ModelRef,
    PruningResult, Result, TrainingResult, canonical_metrics, result_from_dict,
)
from lmforge.runs.store import Run, RunRecord, RunStore, RunStoreUnwritable, record_run

__all__ = [
    "SCHEMA_VERSION", "AuditResult", "CompressionResult", "CurationResult", "DataRef", "EvalResult", "Measured",
    "ModelRef", "PruningResult", "Result", "Run", "RunRecord", "RunStore", "RunStoreUnwritable", "TrainingResult",
    "canonical_metrics", "content_hash", "record_run", "result_from_dict",
]
