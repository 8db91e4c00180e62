"""Named data sets: resolved in the shared data folder, or from the hub when online."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from lmforge.data.corpus import Corpus, corpus_from_path
from lmforge.errors import LmforgeError
from lmforge.paths import data_dir

# A level-1 WikiText heading (" = Title = ") starts a new article.
_ARTICLE_HEADING = re.compile(r"^ = [^=].* = $")


def _require(path: Path, name: str) -> Path:
    if not path.exists():
        raise LmforgeError(f"data set '{name}' not found at {path}; set --data-dir or LMFORGE_DATA_DIR")
    return path


def wikitext2_articles(root: Path) -> Iterator[str]:
    """The test split cut at level-1 headings; the articles concatenate back to the file exactly."""
    path = _require(root / "wikitext2" / "wiki.test.raw", "wikitext2")
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.readlines()
    article: list[str] = []
    for i, line in enumerate(lines):
        if article and _starts_article(lines, i):
            yield "".join(article)
            article = []
        article.append(line)
    if article:
        yield "".join(article)


def _starts_article(lines: list[str], i: int) -> bool:
    """A level-1 heading starts an article, except equation lines that merely look like one.

    This copy has the blank lines around headings removed, so " = 1 henry and
    capacitance C = " inside a formula would pass as a title; those sit between a
    sentence cut mid-way and a line that begins with a number.
    """
    if not _ARTICLE_HEADING.match(lines[i].rstrip("\n")):
        return False
    previous = lines[i - 1].strip() if i else ""
    following = lines[i + 1].strip() if i + 1 < len(lines) else ""
    return not (previous and previous[-1] not in ".!?\"')=" and following[:1].isdigit())


def arc_easy_records(root: Path) -> Iterator[dict[str, Any]]:
    path = _require(root / "arc_easy" / "test.jsonl", "arc_easy")
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                choices = row["question"]["choices"]
                yield {
                    "id": row["id"],
                    "question": row["question"]["stem"],
                    "choices": [c["text"] for c in choices],
                    "labels": [c["label"] for c in choices],
                    "answer": [c["label"] for c in choices].index(row["answerKey"]),
                }


def piqa_records(root: Path) -> Iterator[dict[str, Any]]:
    folder = _require(root / "piqa", "piqa")
    labels = (folder / "valid-labels.lst").read_text().split()
    with open(folder / "valid.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    if len(rows) != len(labels):
        raise LmforgeError(f"piqa: {len(rows)} questions but {len(labels)} labels in {folder}")
    for row, label in zip(rows, labels):
        yield {"goal": row["goal"], "choices": [row["sol1"], row["sol2"]], "answer": int(label)}


def crows_pairs_records(root: Path) -> Iterator[dict[str, Any]]:
    path = _require(root / "crows_pairs" / "crows_pairs_anonymized.csv", "crows_pairs")
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            yield {
                "sent_more": row["sent_more"],
                "sent_less": row["sent_less"],
                "direction": row["stereo_antistereo"],
                "bias_type": row["bias_type"],
            }


def web_article_records(root: Path) -> Iterator[dict[str, Any]]:
    """The 181 news pages: id, url, gold article text and the path of the gzipped HTML."""
    folder = _require(root / "web_articles", "web_articles")
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    for page_id in sorted(truth):
        yield {
            "id": page_id,
            "url": truth[page_id].get("url"),
            "text": truth[page_id]["articleBody"],
            "html_path": str(folder / "html" / f"{page_id}.html.gz"),
        }


def read_html(record: dict[str, Any]) -> str:
    with gzip.open(record["html_path"], "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


RECORDS: dict[str, Callable[[Path], Iterator[dict[str, Any]]]] = {
    "arc_easy": arc_easy_records,
    "piqa": piqa_records,
    "crows_pairs": crows_pairs_records,
    "web_articles": web_article_records,
}

# How each named set reads as plain text documents (for corpora, calibration, decontamination).
_AS_TEXT: dict[str, Callable[[dict[str, Any]], str]] = {
    "arc_easy": lambda r: r["question"] + "\n" + "\n".join(r["choices"]),
    "piqa": lambda r: r["goal"] + "\n" + "\n".join(r["choices"]),
    "crows_pairs": lambda r: r["sent_more"] + "\n" + r["sent_less"],
    "web_articles": lambda r: r["text"],
}

HUB_FALLBACK = {"wikitext2": ("wikitext", "wikitext-2-raw-v1", "test")}
NAMES = ("wikitext2", *RECORDS)


def load_records(name: str, data: str | os.PathLike | None = None) -> Iterator[dict[str, Any]]:
    if name not in RECORDS:
        raise LmforgeError(f"unknown data set '{name}'; known: {', '.join(RECORDS)}")
    return RECORDS[name](data_dir(data))


def _wikitext_from_hub() -> Corpus:
    from datasets import load_dataset

    repo, config, split = HUB_FALLBACK["wikitext2"]
    try:
        lines = load_dataset(repo, config, split=split)["text"]
    except Exception as exc:
        raise LmforgeError(f"wikitext2 is not in the data folder and the hub is unreachable ({type(exc).__name__}); set --data-dir") from None
    return Corpus("wikitext2", lambda: iter(["".join(lines)]), joiner="", info={"source": f"hub:{repo}/{config}"})


def load_corpus(source: str | os.PathLike, *, text_field: str = "text", data: str | os.PathLike | None = None,
                split: str | None = None, on_error: str = "raise") -> Corpus:
    """A corpus from a named data set (wikitext2, web_articles, arc_easy, piqa, crows_pairs) or a path."""
    name = str(source)
    if name == "wikitext2":
        try:
            root = data_dir(data)
        except LmforgeError:
            return _wikitext_from_hub()
        _require(root / "wikitext2" / "wiki.test.raw", "wikitext2")
        # Articles are exact slices of the file, so text() is the raw file, as the GPTQ protocol reads it.
        return Corpus("wikitext2", lambda: wikitext2_articles(root), joiner="", source=root / "wikitext2" / "wiki.test.raw")
    if name in RECORDS:
        as_text = _AS_TEXT[name]
        return Corpus(name, lambda: (as_text(r) for r in load_records(name, data)), source=data_dir(data) / name)
    if not Path(name).expanduser().exists() and "/" not in name and "." not in name:
        raise LmforgeError(f"unknown data set '{name}'; use a path or one of: {', '.join(NAMES)}")
    return corpus_from_path(name, text_field=text_field, split=split, on_error=on_error)
