"""Corpora in: txt, jsonl, parquet, HF datasets saved to disk, folders of those; streamed, never all in memory."""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lmforge.errors import LmforgeError

TEXT_SUFFIXES = {".txt", ".text", ".md", ".raw"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


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


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def _decode_error(path: Path, exc: UnicodeDecodeError, line: int | None = None) -> LmforgeError:
    where = f"line {line}" if line else f"byte {exc.start}"
    return LmforgeError(
        f"{path} is not valid UTF-8 ({where}: byte 0x{exc.object[exc.start]:02x}); "
        "re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
    )


def read_txt(path: Path, split: str | None = None) -> Iterator[str]:
    """A text file as one document, or one per line / per blank-line paragraph."""
    try:
        with _open_text(path) as handle:
            if split == "line":
                for line in handle:
                    if line.strip():
                        yield line.rstrip("\n")
                return
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    if split == "paragraph":
        yield from (p.strip("\n") for p in text.split("\n\n") if p.strip())
    elif text.strip():
        yield text


def read_jsonl(path: Path, text_field: str = "text", on_error: str = "raise") -> Iterator[str]:
    """One document per JSON line, taken from ``text_field`` (dotted paths reach nested fields)."""
    keys = text_field.split(".")
    with _open_text(path) as handle:
        line_no = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as exc:
                raise _decode_error(path, exc, line_no + 1) from None
            if not line:
                return
            line_no += 1
            if not line.strip():
                continue
            try:
                value = json.loads(line)
                for key in keys:
                    value = value[key]
            except json.JSONDecodeError as exc:
                if on_error == "skip":
                    continue
                raise LmforgeError(f"{path}:{line_no}: malformed JSON ({exc.msg}); fix the line or pass --skip-bad-lines") from None
            except (KeyError, TypeError):
                raise LmforgeError(f"{path}:{line_no}: no field '{text_field}'; choose the text field with --text-field") from None
            if isinstance(value, str) and value.strip():
                yield value


def read_parquet(path: Path, text_field: str = "text", batch_rows: int = 1024) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise LmforgeError(f"{path} is not a readable parquet file ({exc})") from None
    if text_field not in parquet.schema_arrow.names:
        raise LmforgeError(f"{path} has no column '{text_field}' (columns: {', '.join(parquet.schema_arrow.names)}); use --text-field")
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[text_field]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield value


def read_hf_dataset(path: Path, text_field: str = "text", split: str | None = None) -> Iterator[str]:
    """A dataset written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        split = split or ("train" if "train" in dataset else next(iter(dataset)))
        dataset = dataset[split]
    if text_field not in dataset.column_names:
        raise LmforgeError(f"{path} has no column '{text_field}' (columns: {', '.join(dataset.column_names)}); use --text-field")
    for row in dataset.select_columns([text_field]).iter(batch_size=1024):
        yield from (v for v in row[text_field] if isinstance(v, str) and v.strip())


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if suffix in TEXT_SUFFIXES or suffix == "":
        return "txt"
    raise LmforgeError(f"{path}: unknown corpus format '{suffix}'; use .txt, .jsonl, .parquet or a saved HF dataset folder")


def read_documents(path: str | os.PathLike, text_field: str = "text", split: str | None = None,
                   on_error: str = "raise") -> Iterator[str]:
    """Stream documents from a file or a folder (files read in sorted order)."""
    path = Path(path).expanduser()
    if _is_hf_dataset(path):
        yield from read_hf_dataset(path, text_field)
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        for file in files:
            yield from read_documents(file, text_field, split, on_error)
        return
    if not path.exists():
        raise LmforgeError(f"corpus not found: {path}; pass a file, a folder, or a named data set")
    fmt = _format(path)
    if fmt == "jsonl":
        yield from read_jsonl(path, text_field, on_error)
    elif fmt == "parquet":
        yield from read_parquet(path, text_field)
    else:
        yield from read_txt(path, split)


def corpus_from_path(path: str | os.PathLike, text_field: str = "text", split: str | None = None,
                     on_error: str = "raise") -> Corpus:
    path = Path(path).expanduser()
    if not path.exists():
        raise LmforgeError(f"corpus not found: {path}; pass a file, a folder, or a named data set")
    return Corpus(path.name, lambda: read_documents(path, text_field, split, on_error), source=path)


def corpus_from_texts(texts: Iterable[str], name: str = "texts", joiner: str = "\n\n") -> Corpus:
    texts = list(texts)
    return Corpus(name, lambda: iter(t for t in texts if t.strip()), joiner=joiner)
