"""Data: corpora in and out, named data sets, calibration samples (and the curation pipeline)."""

from lmforge.data.corpus import Corpus, corpus_from_path, corpus_from_texts, read_documents
from lmforge.data.named import NAMES, load_corpus, load_records, read_html

__all__ = [
    "NAMES",
    "Corpus",
    "calibration_batches",
    "tuning_split",
    "corpus_from_path",
    "corpus_from_texts",
    "load_corpus",
    "load_records",
    "read_documents",
    "read_html",
    "tokenize_corpus",
]


def __getattr__(name: str):
    # Calibration needs torch; load it on first use so curation and PII redaction import in milliseconds.
    if name in ("calibration_batches", "tokenize_corpus", "tuning_split"):
        from lmforge.data import calibration

        return getattr(calibration, name)
    raise AttributeError(f"module 'lmforge.data' has no attribute '{name}'")
