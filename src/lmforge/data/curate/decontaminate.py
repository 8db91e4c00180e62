"""Decontamination: drop training documents that share a word 13-gram with an evaluation set.

The test is the one of GPT-3 (Brown et al. 2020, appendix C) and lm-evaluation-harness's
``decontamination`` module: lower-cased words without punctuation, any shared 13-gram marks the document.
Evaluation items shorter than 13 words (many ARC questions) take part as one n-gram of their full length,
as GPT-3 did for short examples, down to ``min_words`` (shorter items would match ordinary prose).
The query text of each task is what the harness decontaminates on: the question (ARC), the goal (PIQA),
both sentences (CrowS-Pairs), the article (WikiText-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from lmforge.data.curate.base import Document, Step
from lmforge.data.curate.text import hash_words, ngram_hashes, normalized_words
from lmforge.errors import LmforgeError


def task_queries(task: str, data: str | None = None) -> Iterator[str]:
    from lmforge.data import load_corpus, load_records

    if task == "wikitext2":
        yield from load_corpus("wikitext2", data=data).documents()
    elif task == "arc_easy":
        yield from (r["question"] for r in load_records(task, data))
    elif task == "piqa":
        yield from (r["goal"] for r in load_records(task, data))
    elif task == "crows_pairs":
        for r in load_records(task, data):
            yield r["sent_more"]
            yield r["sent_less"]
    else:
        raise LmforgeError(f"decontaminate: unknown task '{task}'; choose from arc_easy, piqa, wikitext2, crows_pairs")


@dataclass
class NgramIndex:
    """Sorted n-gram hashes per n-gram length, with the task each came from."""

    ngram: int
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, texts_by_task: dict[str, list[str]], ngram: int = 13, min_words: int = 8) -> "NgramIndex":
        index = cls(ngram, tasks=list(texts_by_task))
        by_length: dict[int, list[tuple[np.ndarray, int]]] = {}
        for task_id, texts in enumerate(texts_by_task.values()):
            for text in texts:
                hashes = hash_words(normalized_words(text))
                if len(hashes) < min_words:
                    continue
                n = min(ngram, len(hashes))
                by_length.setdefault(n, []).append((ngram_hashes(hashes, n), task_id))
        for n, parts in by_length.items():
            keys = np.concatenate([p for p, _ in parts])
            owners = np.concatenate([np.full(len(p), t, dtype=np.int32) for p, t in parts])
            order = np.argsort(keys, kind="stable")
            index.tables[n] = (keys[order], owners[order])
        return index

    def matches(self, text: str) -> dict[str, int]:
        """Per task, how many of the text's n-grams occur in that task's items."""
        hashes = hash_words(normalized_words(text))
        found: dict[str, int] = {}
        for n, (keys, owners) in self.tables.items():
            grams = ngram_hashes(hashes, n)
            if len(grams) == 0 or len(keys) == 0:
                continue
            positions = np.searchsorted(keys, grams).clip(max=len(keys) - 1)
            hit = keys[positions] == grams
            for task_id in owners[positions[hit]]:
                found[self.tasks[task_id]] = found.get(self.tasks[task_id], 0) + 1
        return found


@dataclass
class Decontaminate(Step):
    name = "decontaminate"
    tasks: list = field(default_factory=lambda: ["arc_easy", "piqa", "wikitext2", "crows_pairs"])
    ngram: int = 13
    min_words: int = 8
    data_dir: str | None = None

    def setup(self) -> None:
        self._index = NgramIndex.build({t: list(task_queries(t, self.data_dir)) for t in self.tasks},
                                       self.ngram, self.min_words)

    def process(self, doc: Document):
        found = self._index.matches(doc.text)
        if not found:
            return None
        for task, hits in found.items():
            self.count("contamination_documents", task)
            self.count("contamination_ngrams", task, hits)
        return "contaminated", ", ".join(f"{task}: {hits} n-grams" for task, hits in sorted(found.items()))
