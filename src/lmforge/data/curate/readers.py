"""Readers: files in (txt, jsonl, parquet, HTML, WARC; gzip too) to ``Document``s, with every unreadable
line or file reported by file and line, skipped or fatal by option."""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from lmforge.data.curate.base import Document, Drop, StepStats
from lmforge.errors import LmforgeError

DEFAULT_SHARDS = 64
FORMATS = ("auto", "txt", "jsonl", "parquet", "html", "warc")
_SUFFIX_FORMAT = {
    ".txt": "txt", ".text": "txt", ".md": "txt", ".raw": "txt",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet",
    ".html": "html", ".htm": "html",
    ".warc": "warc", ".arc": "warc",
}


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
        if self.format not in FORMATS:
            raise LmforgeError(f"input.format '{self.format}' is not one of {', '.join(FORMATS)}")
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


def file_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz",)]
    fmt = _SUFFIX_FORMAT.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise LmforgeError(f"{path}: unknown format '{''.join(path.suffixes)}'; set input.format "
                           f"({', '.join(FORMATS[1:])})")
    return fmt


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


class ShardReader:
    """Reads one shard's files; bad lines and files become drops of the ``read`` step."""

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
            self._count("input_formats", fmt)
            reader = {"txt": self._txt, "jsonl": self._jsonl, "parquet": self._parquet,
                      "html": self._html, "warc": self._warc}[fmt]
            try:
                for doc in reader(path):
                    self.stats.docs_in += 1
                    if not doc.text.strip():
                        self.stats.dropped["empty_text"] += 1
                        self.drops.append(Drop(doc.id, "read", "empty_text", str(path)))
                        continue
                    self.stats.docs_out += 1
                    yield doc
            except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip, unreadable file
                self._bad(str(path), "unreadable_file", f"{path}: cannot be read ({exc})")
            if self.stats.docs_in == before:
                self._count("empty_files", str(path))

    def _txt(self, path: Path) -> Iterator[Document]:
        with _open(path) as handle:
            raw = handle.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._bad(str(path), "invalid_utf8", f"{path}: byte {exc.start} (0x{raw[exc.start]:02x}) is not UTF-8",
                      raw.decode("utf-8", errors="replace")[:200])
            return
        yield Document(str(path), text, {"source": str(path), "format": "text"})

    def _jsonl(self, path: Path) -> Iterator[Document]:
        keys = self.source.text_field.split(".")
        with _open(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                where = f"{path}:{line_no}"
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._bad(where, "invalid_utf8", f"{where}: byte {exc.start} (0x{raw[exc.start]:02x}) is not UTF-8")
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    self._bad(where, "malformed_json", f"{where}: malformed JSON ({exc.msg} at column {exc.colno})", line[:200])
                    continue
                value = row
                try:
                    for key in keys:
                        value = value[key]
                except (KeyError, TypeError, IndexError):
                    self._bad(where, "missing_text_field", f"{where}: no field '{self.source.text_field}' (set input.text_field)")
                    continue
                if not isinstance(value, str):
                    self._bad(where, "text_not_a_string", f"{where}: field '{self.source.text_field}' is {type(value).__name__}, not text")
                    continue
                doc_id = str(row.get(self.source.id_field, where)) if isinstance(row, dict) else where
                yield Document(doc_id, value, {"source": where, "format": "text"})

    def _parquet(self, path: Path) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:
            raise LmforgeError(f"{path} is not a readable parquet file ({exc})") from None
        names = parquet.schema_arrow.names
        if self.source.text_field not in names:
            raise LmforgeError(f"{path} has no column '{self.source.text_field}' (columns: {', '.join(names)}); set input.text_field")
        columns = [self.source.text_field] + ([self.source.id_field] if self.source.id_field in names else [])
        row_no = 0
        for batch in parquet.iter_batches(batch_size=1024, columns=columns):
            texts = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if len(columns) > 1 else [None] * len(texts)
            for text, doc_id in zip(texts, ids):
                where = f"{path}:{row_no}"
                row_no += 1
                if not isinstance(text, str):
                    self._bad(where, "text_not_a_string", f"{where}: column '{self.source.text_field}' is empty")
                    continue
                yield Document(str(doc_id) if doc_id is not None else where, text, {"source": where, "format": "text"})

    def _html(self, path: Path) -> Iterator[Document]:
        with _open(path) as handle:
            yield Document(str(path), self._decode_html(handle.read()), {"source": str(path), "format": "html"})

    def _decode_html(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Web pages that are not UTF-8 are overwhelmingly Windows-1252 (the WHATWG default for Latin text).
            self._count("decoding", "cp1252_fallback")
            return raw.decode("cp1252", errors="replace")

    def _warc(self, path: Path) -> Iterator[Document]:
        try:
            from warcio.archiveiterator import ArchiveIterator
        except ImportError:
            raise LmforgeError("reading WARC needs warcio; `pip install 'lmforge[curate]'`") from None
        with open(path, "rb") as handle:
            for record in ArchiveIterator(handle):
                if record.rec_type != "response":
                    continue
                content_type = (record.http_headers.get_header("Content-Type") or "") if record.http_headers else ""
                if "html" not in content_type.lower():
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI")
                record_id = record.rec_headers.get_header("WARC-Record-ID") or url
                html = self._decode_html(record.content_stream().read())
                yield Document(record_id, html, {"source": str(path), "url": url, "format": "html"})
