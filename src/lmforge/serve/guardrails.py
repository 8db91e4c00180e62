"""Guardrails around a served model: content filter, PII redaction of outputs, API keys, rate limits.

Each guard is a small object with one job; the app wires them together. The
content filter is data (a versioned YAML rule file, see ``filters/default.yaml``),
not code, so a deployer can review and extend it without touching the server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from lmforge.data.curate.pii import redact as redact_pii
from lmforge.errors import LmforgeError
from lmforge.io import read_yaml_mapping

DEFAULT_FILTER = Path(__file__).parent / "filters" / "default.yaml"
_STAGES = ("input", "output")


@dataclass(frozen=True)
class FilterRule:
    id: str
    regex: re.Pattern
    applies_to: frozenset[str]


@dataclass
class ContentFilter:
    """Rules from a versioned YAML file; ``hits(text, stage)`` names the rules a text breaks."""

    version: str
    rules: list[FilterRule] = field(default_factory=list)
    source: str = ""

    def hits(self, text: str, stage: str) -> list[str]:
        return [rule.id for rule in self.rules if stage in rule.applies_to and rule.regex.search(text)]

    def first_match(self, text: str, stage: str) -> tuple[str, int] | None:
        """The rule whose match starts earliest in ``text`` and where, or None."""
        found = [(m.start(), rule.id) for rule in self.rules if stage in rule.applies_to
                 for m in [rule.regex.search(text)] if m]
        return (min(found)[1], min(found)[0]) if found else None


def load_filter(path: str | Path | None = None) -> ContentFilter:
    """Read a rule file (default: the shipped ``filters/default.yaml``); errors name the rule and the fix."""
    path = Path(path) if path else DEFAULT_FILTER
    spec = read_yaml_mapping(path, "content filter file", f"pass a YAML rule file (see {DEFAULT_FILTER})")
    if "version" not in spec:
        raise LmforgeError(f"{path} needs a top-level 'version' and a 'rules' list; see {DEFAULT_FILTER}")
    rules = []
    for i, raw in enumerate(spec.get("rules") or []):
        rule_id = str(raw.get("id") or f"rule-{i}")
        stages = frozenset(raw.get("applies_to") or _STAGES)
        if not stages <= set(_STAGES):
            raise LmforgeError(f"{path}: rule '{rule_id}' applies_to {sorted(stages)}; use input and/or output")
        if "pattern" in raw:
            source = str(raw["pattern"])
        elif raw.get("terms"):
            source = r"(?i)\b(?:" + "|".join(re.escape(str(t)) for t in raw["terms"]) + r")\b"
        else:
            raise LmforgeError(f"{path}: rule '{rule_id}' has neither 'pattern' nor 'terms'; give one")
        try:
            regex = re.compile(source)
        except re.error as exc:
            raise LmforgeError(f"{path}: rule '{rule_id}' has a bad pattern ({exc}); fix the regular expression") from None
        rules.append(FilterRule(rule_id, regex, stages))
    return ContentFilter(version=str(spec["version"]), rules=rules, source=str(path))


class OutputGuard:
    """Screens generated text as it streams: stop sequences, output filter, PII redaction.

    Text is released only once it lies ``holdback`` characters behind the end of
    what was generated, so a PII item or a stop sequence split across tokens is
    redacted (or cut) before any of it leaves the server.
    """

    def __init__(self, content_filter: ContentFilter | None, redact: bool, stop: Iterable[str] = (),
                 holdback: int = 64):
        self.content_filter = content_filter
        self.redact = redact
        self.stop = [s for s in stop if s]
        self.holdback = holdback
        self.raw = ""
        self.released = ""
        self.finish_reason: str | None = None  # set when the guard ends the text: 'stop' or 'content_filter'
        self.filter_hits: list[str] = []
        self.pii_counts: dict[str, int] = {}

    def _screened(self) -> str:
        if not self.redact:
            return self.raw
        text, counts = redact_pii(self.raw)
        self.pii_counts = counts
        return text

    def feed(self, delta: str) -> str:
        """Add generated text; return what may be sent now. After ``finish_reason`` is set, nothing more."""
        if self.finish_reason is not None:
            return ""
        self.raw += delta
        cut = None
        for stop in self.stop:
            at = self.raw.find(stop)
            if at >= 0 and (cut is None or at < cut):
                cut = at
        if cut is not None:
            self.raw = self.raw[:cut]
            self.finish_reason = "stop"
        if self.content_filter is not None and (hit := self.content_filter.first_match(self.raw, "output")):
            self.filter_hits.append(hit[0])
            self.raw = self.raw[: hit[1]]
            self.finish_reason = "content_filter"
        if self.finish_reason is not None:
            return self.flush()
        screened = self._screened()
        stable = screened[: max(0, len(screened) - self.holdback)]
        if len(stable) <= len(self.released) or not stable.startswith(self.released):
            return ""
        out = stable[len(self.released):]
        self.released = stable
        return out

    def flush(self) -> str:
        """Everything not yet sent, screened (call once generation has ended)."""
        final = self._screened()
        # A PII item longer than the holdback may reach back into text already sent; only the tail can go now.
        out = final[len(self.released):]
        self.released = self.released + out
        return out

    @property
    def text(self) -> str:
        return self.released


def key_id(api_key: str | None) -> str:
    """A stable, non-reversible name for a key in logs (never the key itself)."""
    return "anonymous" if not api_key else "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


class ApiKeys:
    """Bearer-token check in constant time; with no keys configured every request is allowed."""

    def __init__(self, keys: Iterable[str] = ()):
        self.keys = [k for k in keys if k]

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def check(self, authorization: str | None) -> str | None:
        """The key the request presented if it is valid (None when no keys are required); raises PermissionError."""
        if not self.keys:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        # compare_digest refuses non-ASCII str; such a header cannot hold a key we issued anyway.
        if scheme.lower() == "bearer" and token.isascii() and any(hmac.compare_digest(token, k) for k in self.keys):
            return token
        raise PermissionError("missing or wrong API key; send 'Authorization: Bearer <key>'")


class RateLimiter:
    """One token bucket per key: ``burst`` requests at once, refilled at ``per_minute`` requests a minute."""

    def __init__(self, per_minute: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, int(per_minute)))
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self.buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def wait(self, key: str) -> float:
        """Seconds until the key may send again, without taking anything (0.0: it may now)."""
        with self.lock:
            tokens = self._tokens(key, self.clock())
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def acquire(self, key: str) -> float:
        """Take one request from the key's bucket: 0.0 if allowed, else the seconds until one is available."""
        with self.lock:
            now = self.clock()
            tokens = self._tokens(key, now)
            if tokens >= 1.0:
                self.buckets[key] = (tokens - 1.0, now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
