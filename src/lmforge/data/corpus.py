"""Corpora in: txt, jsonl, parquet, HF datasets saved to disk, folders of those; streamed, never all in memory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lmforge.data.readers import BadRecord, file_format, is_hf_dataset, read_file
from lmforge.errors import LmforgeError

CORPUS_FORMATS = ("txt", "jsonl", "parquet", "hf_dataset")


@dataclass
class Corpus:
    """A named, re-iterable stream of documents.

    ``documents()`` streams the text of each document; ``text()`` concatenates
    them (with ``joiner``) for protocols that tokenize a corpus once.
    """

    name: str
    documents_fn: Callable[[], Iterator[str]]
    joiner: str = "\n\n"
    source: Path | None = None
    info: dict = field(default_factory=dict)

    def documents(self, limit: int | None = None) -> Iterator[str]:
        count = 0
        for document in self.documents_fn():
            if limit is not None and count >= limit:
                return
            count += 1
            yield document
        if count == 0:
            raise LmforgeError(f"corpus '{self.name}' is empty (no documents with text); check the path and --text-field")

    def text(self, limit: int | None = None) -> str:
        return self.joiner.join(self.documents(limit))

    def __iter__(self) -> Iterator[str]:
        return self.documents()


def read_documents(path: str | os.PathLike, text_field: str = "text", split: str | None = None,
                   on_error: str = "raise") -> Iterator[str]:
    """Stream the text of every document in a file or a folder (files read in sorted order); a line that cannot
    be read stops the stream with its file and line, or is skipped with ``on_error="skip"``."""
    path = Path(path).expanduser()
    if path.is_dir() and not is_hf_dataset(path):
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            yield from read_documents(file, text_field, split, on_error)
        return
    if not path.exists():
        raise LmforgeError(f"corpus not found: {path}; pass a file, a folder, or a named data set")
    fmt = file_format(path)
    if fmt not in CORPUS_FORMATS:
        raise LmforgeError(f"{path}: a {fmt} file is raw web data; extract its text with `lmforge data run` first")
    for record in read_file(path, fmt, text_field, split=split, field_hint="--text-field"):
        if isinstance(record, BadRecord):
            if on_error == "skip" or record.reason == "text_not_a_string":  # an empty (null) text is no document
                continue
            fix = ("re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`" if record.reason == "invalid_utf8"
                   else "fix the line or pass --skip-bad-lines")
            raise LmforgeError(f"{record.detail}; {fix}")
        if record.text.strip():
            yield record.text


def corpus_from_path(path: str | os.PathLike, text_field: str = "text", split: str | None = None,
                     on_error: str = "raise") -> Corpus:
    path = Path(path).expanduser()
    if not path.exists():
        raise LmforgeError(f"corpus not found: {path}; pass a file, a folder, or a named data set")
    return Corpus(path.name, lambda: read_documents(path, text_field, split, on_error), source=path)


def corpus_from_texts(texts: Iterable[str], name: str = "texts", joiner: str = "\n\n") -> Corpus:
    texts = list(texts)
    return Corpus(name, lambda: iter(t for t in texts if t.strip()), joiner=joiner)
