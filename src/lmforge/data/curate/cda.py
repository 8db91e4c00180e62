"""Counterfactual data augmentation (Lu et al. 2020; Zmigrod et al. 2019): each document is joined by a copy
with the words of a demographic axis swapped (he ↔ she, father ↔ mother, John ↔ Patricia), so a model trained
on both sees every context with either group.

The word-pair list is a versioned JSON file (``wordlists/gender_v1.json``): two-sided pairs, every word in
exactly one pair, plus a name list. Swaps are whole words only (``he`` in ``the`` is untouched) and keep the
case of what they replace (``He`` → ``She``, ``HIS`` → ``HERS``); names are swapped only when capitalized. The
step drops nothing: it adds the counterfactual copy after each document it changes (``mode: add``) or rewrites
the document in place (``mode: replace``), and counts augmented documents and the list's version for the card.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

from lmforge.data.curate.base import Document, Drop, Step
from lmforge.errors import LmforgeError

WORDLISTS = resources.files("lmforge.data.curate") / "wordlists"
MODES = ("add", "replace")


@dataclass(frozen=True, eq=False)  # hashed by identity: one compiled pattern per loaded list
class WordPairs:
    """A two-sided swap table read from a word-pair file."""

    name: str
    version: str
    words: dict[str, str]  # lower-case word -> its partner, both directions
    names: dict[str, str]  # capitalized name -> its partner, both directions

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def _two_sided(pairs, source: str, what: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for k, pair in enumerate(pairs):
        if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(w, str) and w.strip() for w in pair)
                or pair[0] == pair[1]):
            raise LmforgeError(f"{source}: {what} {k} {pair!r} is one-sided; each entry must be two different words")
        for word, partner in (pair, pair[::-1]):
            if word in table:
                raise LmforgeError(f"{source}: {what} {k} {pair!r} reuses '{word}' (already paired with "
                                   f"'{table[word]}'); a two-sided list gives each word one partner")
            table[word] = partner
    return table


@lru_cache(maxsize=8)
def load_word_pairs(path: str | None = None) -> WordPairs:
    """The shipped gender list (default) or a word-pair file of the same shape."""
    source = Path(path) if path else WORDLISTS / "gender_v1.json"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LmforgeError(f"{source}: cannot read the word-pair list ({exc})") from None
    if missing := [k for k in ("name", "version", "pairs") if k not in data]:
        raise LmforgeError(f"{source}: word-pair list lacks {', '.join(missing)}; see lmforge/data/curate/wordlists/gender_v1.json")
    words = _two_sided([[w.lower() if isinstance(w, str) else w for w in p] if isinstance(p, list) else p
                        for p in data["pairs"]], str(source), "pair")
    names = _two_sided(data.get("names", []), str(source), "name pair")
    return WordPairs(str(data["name"]), str(data["version"]), words, names)


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[0].isupper():
        return word[0].upper() + word[1:]
    return word


@lru_cache(maxsize=8)
def _pattern(pairs: WordPairs) -> re.Pattern:
    alternatives = sorted([*pairs.words, *pairs.names], key=len, reverse=True)
    return re.compile(r"(?<![\w'])(" + "|".join(map(re.escape, alternatives)) + r")(?![\w])", re.IGNORECASE)


def swap(text: str, pairs: WordPairs | None = None) -> tuple[str, int]:
    """``text`` with every listed word and name swapped for its partner, and how many swaps were made."""
    pairs = pairs or load_word_pairs()
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        found = match.group(0)
        if found in pairs.names:
            partner = pairs.names[found]
        elif found.lower() in pairs.words and (found.islower() or found[0].isupper()):
            partner = _match_case(found, pairs.words[found.lower()])
        else:  # a name written in lower case ("mark"), or mixed case: not a listed word
            return found
        count += 1
        return partner

    return _pattern(pairs).sub(replace, text), count


@dataclass
class CounterfactualAugment(Step):
    name = "counterfactual_augment"
    word_pairs: str = ""  # a word-pair file; empty: the shipped gender list
    mode: str = "add"  # add: keep each document and add its counterfactual copy | replace: rewrite in place

    def setup(self) -> None:
        if self.mode not in MODES:
            raise LmforgeError(f"counterfactual_augment mode '{self.mode}' is not one of {', '.join(MODES)}")
        self._pairs = load_word_pairs(self.word_pairs or None)

    def process(self, doc: Document):
        if not hasattr(self, "_pairs"):
            self.setup()
        swapped, swaps = swap(doc.text, self._pairs)
        self.count("word_list", self._pairs.label)
        if not swaps:
            return None
        self.count("augmented", "documents")
        self.count("augmented", "swaps", swaps)
        if self.mode == "replace":
            doc.text = swapped
        else:
            doc.meta["_counterfactual"] = swapped
        return None

    def run(self, docs: Iterable[Document], drops: list[Drop], keep_dropped_text: bool = True) -> Iterator[Document]:
        for doc in super().run(docs, drops, keep_dropped_text):
            counterfactual = doc.meta.pop("_counterfactual", None)
            yield doc
            if counterfactual is not None:
                self.stats.docs_out += 1
                yield Document(f"{doc.id}#cda", counterfactual, {**doc.meta, "counterfactual_of": doc.id})


def augment_texts(texts: Iterable[str], word_pairs: str | None = None) -> tuple[list[str], int]:
    """Every text followed by its counterfactual copy where one differs; and how many copies were added."""
    pairs = load_word_pairs(word_pairs)
    out, added = [], 0
    for text in texts:
        out.append(text)
        swapped, swaps = swap(text, pairs)
        if swaps:
            out.append(swapped)
            added += 1
    return out, added
