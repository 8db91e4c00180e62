"""Documents and the step base class: every step has one job; the base class iterates, times, counts and
records every dropped document with its reason."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np

from lmforge.errors import LmforgeError


@dataclass
class Document:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Drop:
    """A dropped document and why (``reason`` is short and stable, ``detail`` says where or what)."""

    id: str
    step: str
    reason: str
    detail: str = ""
    text: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "step": self.step, "reason": self.reason, "detail": self.detail, "text": self.text}


@dataclass
class StepStats:
    docs_in: int = 0
    docs_out: int = 0
    seconds: float = 0.0
    dropped: Counter = field(default_factory=Counter)
    counters: dict[str, Counter] = field(default_factory=dict)

    def merge(self, other: "StepStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.seconds += other.seconds
        self.dropped.update(other.dropped)
        for name, counter in other.counters.items():
            self.counters.setdefault(name, Counter()).update(counter)

    def to_dict(self) -> dict[str, Any]:
        return {"docs_in": self.docs_in, "docs_out": self.docs_out, "seconds": self.seconds,
                "dropped": dict(self.dropped), "counters": {k: dict(v) for k, v in self.counters.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepStats":
        return cls(data["docs_in"], data["docs_out"], data["seconds"], Counter(data["dropped"]),
                   {k: Counter(v) for k, v in data["counters"].items()})


STEPS: dict[str, type["Step"]] = {}


class Step:
    """One job on a stream of documents.

    Subclasses implement ``process(doc)``: change ``doc`` in place and return None to keep it, or return a
    reason string (``"reason"`` or ``("reason", "detail")``) to drop it. Options are dataclass fields, so a
    YAML mapping turns into a step with validation by name. ``count(name, key)`` feeds the data card.
    """

    name: ClassVar[str]
    # Global steps (deduplication) need every shard before they can decide; see ``GlobalStep``.
    is_global: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            STEPS[cls.name] = cls

    def setup(self) -> None:
        """Load models or tables once per worker process (called before the first document)."""

    def process(self, doc: Document) -> str | tuple[str, str] | None:
        raise NotImplementedError

    def count(self, counter: str, key: str, n: int = 1) -> None:
        self.stats.counters.setdefault(counter, Counter())[key] += n

    def run(self, docs: Iterable[Document], drops: list[Drop], keep_dropped_text: bool = True) -> Iterator[Document]:
        """Stream ``docs`` through ``process``; dropped ones go to ``drops``, counts to ``self.stats``."""
        stats = self.reset_stats()
        for doc in docs:
            stats.docs_in += 1
            start = time.perf_counter()
            verdict = self.process(doc)
            stats.seconds += time.perf_counter() - start
            if verdict is None:
                stats.docs_out += 1
                yield doc
                continue
            reason, detail = verdict if isinstance(verdict, tuple) else (verdict, "")
            stats.dropped[reason] += 1
            drops.append(Drop(doc.id, self.name, reason, detail, doc.text if keep_dropped_text else ""))

    def reset_stats(self) -> StepStats:
        self._stats = StepStats()
        return self._stats

    @property
    def stats(self) -> StepStats:
        """Counts of the latest ``run`` (or ``decide``)."""
        if not hasattr(self, "_stats"):
            self._stats = StepStats()
        return self._stats

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}


class GlobalStep(Step):
    """A step that decides from all documents at once (deduplication), in three phases:

    ``signature(doc)`` runs in the shard workers and returns a compact row (numpy-friendly);
    ``decide(ids, signatures)`` runs once over every shard's document ids and stacked signature rows, in a
    fixed order, and returns, per shard,
    ``{doc_index: (reason, detail)}`` for the documents to drop; the next stage applies it. The first
    document (in shard order) of a duplicate group is the one kept, so the result does not depend on
    how many workers ran.
    """

    is_global = True

    def signature(self, doc: Document) -> Any:
        raise NotImplementedError

    def decide(self, ids: list[list[str]], signatures: list[np.ndarray]) -> list[dict[int, tuple[str, str]]]:
        raise NotImplementedError

    def process(self, doc: Document) -> None:
        return None


def build_step(spec: Any) -> Step:
    """A step from a YAML entry: ``"name"`` or ``{"name": {option: value, ...}}``."""
    if isinstance(spec, Step):
        return spec
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, options = next(iter(spec.items()))
        options = options or {}
    else:
        raise LmforgeError(f"bad step entry {spec!r}; write a step name or a one-key mapping `name: {{option: value}}`")
    if name not in STEPS:
        raise LmforgeError(f"unknown step '{name}'; known steps: {', '.join(sorted(STEPS))}")
    cls = STEPS[name]
    known = {f.name for f in fields(cls)} if hasattr(cls, "__dataclass_fields__") else set()
    unknown = sorted(set(options) - known)
    if unknown:
        raise LmforgeError(f"step '{name}' has no option {', '.join(unknown)}; options: {', '.join(sorted(known)) or 'none'}")
    if known:
        _check_option_types(name, cls, options)
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise LmforgeError(f"step '{name}': {exc}") from None


_OPTION_TYPES = {"int": (int, "an integer"), "float": ((int, float), "a number"), "bool": (bool, "true or false"),
                 "str": (str, "a string"), "list": ((list, tuple), "a list"), "tuple": ((list, tuple), "a list"),
                 "dict": (dict, "a mapping")}


def _check_option_types(name: str, cls, options: dict) -> None:
    """Each option has the type its field declares (``min_score: abc`` is an error naming the option)."""
    for f in fields(cls):
        if f.name not in options:
            continue
        value, annotation = options[f.name], str(f.type)
        expected = _OPTION_TYPES.get(annotation.split("|")[0].split("[")[0].strip())
        if expected is None or (value is None and "None" in annotation):
            continue
        if not isinstance(value, expected[0]) or (isinstance(value, bool) and expected[0] is not bool):
            raise LmforgeError(f"step '{name}': option {f.name} must be {expected[1]} (got {value!r})")
