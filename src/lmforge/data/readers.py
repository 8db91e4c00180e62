"""The one set of format readers: files (txt, jsonl, parquet, HTML, WARC, HF datasets saved to disk; gzip too) to
records, streamed. A line or file that cannot be read is yielded as a ``BadRecord`` (where, why, what), never
raised or dropped here: the corpus loader (``data/corpus.py``) stops on it or skips it by option, the curation
reader (``data/curate/readers.py``) records it as a drop with its reason. Only a file that cannot be read at all
as its format (no such column, not parquet) raises, naming ``field_hint``: how the caller's user sets the field.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from lmforge.errors import LmforgeError

FORMATS = ("txt", "jsonl", "parquet", "html", "warc", "hf_dataset")
SUFFIX_FORMAT = {
    ".txt": "txt", ".text": "txt", ".md": "txt", ".raw": "txt",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet",
    ".html": "html", ".htm": "html",
    ".warc": "warc", ".arc": "warc",
}


@dataclass
class Record:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BadRecord:
    where: str  # file, or file:line / file:row
    reason: str  # a short key: invalid_utf8, malformed_json, missing_text_field, text_not_a_string
    detail: str  # the one-line message, without the caller's fix
    text: str = ""  # the start of what was read, for the drop log


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("dataset_info.json", "state.json", "dataset_dict.json"))


def file_format(path: Path, declared: str = "auto") -> str:
    """The format named by ``declared``, else by the suffix (``.gz`` looked through; no suffix is text)."""
    if declared != "auto":
        return declared
    if is_hf_dataset(path):
        return "hf_dataset"
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    fmt = SUFFIX_FORMAT.get(suffixes[-1] if suffixes else ".txt")
    if fmt is None:
        raise LmforgeError(f"{path}: unknown format '{''.join(path.suffixes)}'; use one of "
                           f"{', '.join(sorted(set(SUFFIX_FORMAT)))} or a saved HF dataset folder")
    return fmt


def open_bytes(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _not_utf8(where: str, raw: bytes, exc: UnicodeDecodeError) -> BadRecord:
    return BadRecord(where, "invalid_utf8", f"{where}: byte {exc.start} (0x{raw[exc.start]:02x}) is not valid UTF-8",
                     raw.decode("utf-8", errors="replace")[:200])


def read_txt(path: Path, split: str | None = None) -> Iterator[Record | BadRecord]:
    """The file as one document, or one per non-empty line (``split="line"``) or blank-line paragraph."""
    if split == "line":
        with open_bytes(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield _not_utf8(f"{path}:{line_no}", raw, exc)
                    continue
                if line.strip():
                    yield Record(f"{path}:{line_no}", line.rstrip("\n").rstrip("\r"), {"source": str(path)})
        return
    with open_bytes(path) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield _not_utf8(str(path), raw, exc)
        return
    if split == "paragraph":
        for number, paragraph in enumerate(p.strip("\n") for p in text.split("\n\n") if p.strip()):
            yield Record(f"{path}#{number}", paragraph, {"source": str(path)})
    else:
        yield Record(str(path), text, {"source": str(path)})


def read_jsonl(path: Path, text_field: str = "text", id_field: str = "id",
               field_hint: str = "--text-field") -> Iterator[Record | BadRecord]:
    """One document per JSON line, from ``text_field`` (a dotted path reaches a nested field)."""
    keys = text_field.split(".")
    with open_bytes(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}:{line_no}"
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield _not_utf8(where, raw, exc)
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRecord(where, "malformed_json", f"{where}: malformed JSON ({exc.msg} at column {exc.colno})",
                                line[:200])
                continue
            value = row
            try:
                for key in keys:
                    value = value[key]
            except (KeyError, TypeError, IndexError):
                yield BadRecord(where, "missing_text_field", f"{where}: no field '{text_field}' (set {field_hint})")
                continue
            if not isinstance(value, str):
                yield BadRecord(where, "text_not_a_string",
                                f"{where}: field '{text_field}' is {type(value).__name__}, not text")
                continue
            doc_id = str(row.get(id_field, where)) if isinstance(row, dict) else where
            yield Record(doc_id, value, {"source": where})


def read_parquet(path: Path, text_field: str = "text", id_field: str = "id",
                 field_hint: str = "--text-field") -> Iterator[Record | BadRecord]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise LmforgeError(f"{path} is not a readable parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise LmforgeError(f"{path} has no column '{text_field}' (columns: {', '.join(names)}); set {field_hint}")
    columns = [text_field] + ([id_field] if id_field in names and id_field != text_field else [])
    row_no = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if len(columns) > 1 else [None] * len(texts)
        for text, doc_id in zip(texts, ids):
            where = f"{path}:{row_no}"
            row_no += 1
            if not isinstance(text, str):
                yield BadRecord(where, "text_not_a_string", f"{where}: column '{text_field}' is empty")
                continue
            yield Record(str(doc_id) if doc_id is not None else where, text, {"source": where})


def read_hf_dataset(path: Path, text_field: str = "text", split: str | None = None,
                    field_hint: str = "--text-field") -> Iterator[Record | BadRecord]:
    """A dataset written by ``datasets``' ``save_to_disk`` (a Dataset, or a DatasetDict's ``split``, else train)."""
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        dataset = dataset[split if split in dataset else ("train" if "train" in dataset else next(iter(dataset)))]
    if text_field not in dataset.column_names:
        raise LmforgeError(f"{path} has no column '{text_field}' (columns: {', '.join(dataset.column_names)}); "
                           f"set {field_hint}")
    row_no = 0
    for rows in dataset.select_columns([text_field]).iter(batch_size=1024):
        for text in rows[text_field]:
            where = f"{path}:{row_no}"
            row_no += 1
            if isinstance(text, str):
                yield Record(where, text, {"source": where})
            else:
                yield BadRecord(where, "text_not_a_string", f"{where}: column '{text_field}' is empty")


def decode_html(raw: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8, else Windows-1252 — what web pages that are not UTF-8 overwhelmingly are (the
    WHATWG default for Latin text)."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace"), "cp1252"


def read_html(path: Path) -> Iterator[Record | BadRecord]:
    with open_bytes(path) as handle:
        html, encoding = decode_html(handle.read())
    yield Record(str(path), html, {"source": str(path), "encoding": encoding})


def read_warc(path: Path) -> Iterator[Record | BadRecord]:
    """The HTML responses of a WARC file."""
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
            html, encoding = decode_html(record.content_stream().read())
            yield Record(record.rec_headers.get_header("WARC-Record-ID") or url, html,
                         {"source": str(path), "url": url, "encoding": encoding})


def read_file(path: Path, fmt: str, text_field: str = "text", id_field: str = "id", split: str | None = None,
              field_hint: str = "--text-field") -> Iterator[Record | BadRecord]:
    """Every record of one file (or saved HF dataset folder) in format ``fmt`` (see ``file_format``)."""
    if fmt == "txt":
        return read_txt(path, split)
    if fmt == "jsonl":
        return read_jsonl(path, text_field, id_field, field_hint)
    if fmt == "parquet":
        return read_parquet(path, text_field, id_field, field_hint)
    if fmt == "hf_dataset":
        return read_hf_dataset(path, text_field, split, field_hint)
    if fmt == "html":
        return read_html(path)
    if fmt == "warc":
        return read_warc(path)
    raise LmforgeError(f"{path}: unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
