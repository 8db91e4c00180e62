"""The curation input: which files (``Input``), dealt into shards, read by the shared format readers into
``Document``s, with every unreadable line or file reported by file and line, skipped or fatal by option."""

from __future__ import annotations

import glob
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lmforge.data.curate.base import Document, Drop, StepStats
from lmforge.data.readers import BadRecord, Record, file_format, read_file
from lmforge.errors import LmforgeError

DEFAULT_SHARDS = 64
FORMATS = ("txt", "jsonl", "parquet", "html", "warc")


@dataclass
class Input:
    """Where the raw documents are and how to read them.

    ``paths``: files, folders (read recursively, sorted) or glob patterns. ``on_error``: ``skip`` records a
    malformed JSON line or non-UTF-8 text as a drop of the ``read`` step and goes on; ``raise`` stops with
    the file and line. ``shards``: how many work units the files are dealt into, round robin in sorted
    order (default: one per file up to 64; a fixed number, so the output never depends on the machine).
    """

    paths: list = field(default_factory=list)
    format: str = "auto"
    text_field: str = "text"
    id_field: str = "id"
    on_error: str = "skip"
    shards: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.paths, (str, os.PathLike)):
            self.paths = [self.paths]
        if self.format not in ("auto", *FORMATS):
            raise LmforgeError(f"input.format '{self.format}' is not one of auto, {', '.join(FORMATS)}")
        if self.on_error not in ("skip", "raise"):
            raise LmforgeError(f"input.on_error must be 'skip' or 'raise', not '{self.on_error}'")

    def files(self) -> list[Path]:
        if not self.paths:
            raise LmforgeError("input.paths is empty; list the files or folders to curate")
        found: list[Path] = []
        for entry in self.paths:
            path = Path(entry).expanduser()
            if path.is_dir():
                found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            elif path.is_file():
                found.append(path)
            else:
                matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
                if not matches:
                    raise LmforgeError(f"input path not found: {path}; check input.paths")
                found += matches
        return found

    def shard_files(self) -> list[list[str]]:
        files = [str(f) for f in self.files()]
        count = min(self.shards or DEFAULT_SHARDS, len(files))
        return [files[i::count] for i in range(count)]


class ShardReader:
    """Reads one shard's files through the shared readers (``lmforge.data.readers``); bad lines and files become
    drops of the ``read`` step."""

    def __init__(self, source: Input):
        self.source = source
        self.stats = StepStats()
        self.drops: list[Drop] = []

    def _count(self, counter: str, key: str) -> None:
        self.stats.counters.setdefault(counter, Counter())[key] += 1

    def _bad(self, doc_id: str, reason: str, detail: str, text: str = "") -> None:
        if self.source.on_error == "raise":
            raise LmforgeError(f"{detail}; fix the input or set input.on_error: skip")
        self.stats.docs_in += 1
        self.stats.dropped[reason] += 1
        self.drops.append(Drop(doc_id, "read", reason, detail, text))

    def documents(self, files: list[str]) -> Iterator[Document]:
        for name in files:
            path = Path(name)
            before = self.stats.docs_in
            fmt = file_format(path, self.source.format)
            if fmt not in FORMATS:
                raise LmforgeError(f"{path}: a {fmt} folder is not a curation input; list its files in input.paths")
            self._count("input_formats", fmt)
            try:
                for record in read_file(path, fmt, self.source.text_field, self.source.id_field,
                                        field_hint="input.text_field"):
                    if isinstance(record, BadRecord):
                        self._bad(record.where, record.reason, record.detail, record.text)
                        continue
                    self.stats.docs_in += 1
                    if not record.text.strip():
                        self.stats.dropped["empty_text"] += 1
                        self.drops.append(Drop(record.id, "read", "empty_text", str(path)))
                        continue
                    self.stats.docs_out += 1
                    yield self._document(record, fmt)
            except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip, unreadable file
                self._bad(str(path), "unreadable_file", f"{path}: cannot be read ({exc})")
            if self.stats.docs_in == before:
                self._count("empty_files", str(path))

    def _document(self, record: Record, fmt: str) -> Document:
        meta = dict(record.meta)
        if meta.pop("encoding", "utf-8") == "cp1252":
            self._count("decoding", "cp1252_fallback")
        meta["format"] = "html" if fmt in ("html", "warc") else "text"
        return Document(record.id, record.text, meta)
