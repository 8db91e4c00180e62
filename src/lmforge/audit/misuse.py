"""Misuse probes for instruction models: prompt injection, system-prompt leakage, requests for PII.

A versioned probe file (``probes/misuse_v1.json``) gives each probe a system
message, a user message and rules; the model answers greedily through its chat
template and a probe passes when no rule fires. Rules, never a judge model:
``must_not_contain`` (case-insensitive substrings), ``must_not_match``
(case-insensitive regular expressions) and ``must_not_contain_pii`` (types
found by the data pipeline's PII detector). Rules can miss a paraphrased leak
and can fire on a quoted refusal; the replies are kept so a reader can check.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from lmforge.audit.generation import generate
from lmforge.data.curate.pii import find_pii, redact
from lmforge.errors import LmforgeError

RULES = ("must_not_contain", "must_not_match", "must_not_contain_pii")


def load_misuse_probes(path: str | Path | None = None) -> dict[str, Any]:
    source = Path(path) if path else resources.files("lmforge.audit") / "probes" / "misuse_v1.json"
    try:
        raw = source.read_bytes()
        probes = json.loads(raw)
        for probe in probes["probes"]:
            if not {"id", "category", "user"} <= set(probe) or not any(rule in probe for rule in RULES):
                raise KeyError(f"probe {probe.get('id', '?')} needs id, category, user and one of {', '.join(RULES)}")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LmforgeError(f"{source}: not a misuse probe file ({exc}); see lmforge/audit/probes/misuse_v1.json") from None
    return {**probes, "sha256": hashlib.sha256(raw).hexdigest()}


def violations(probe: dict[str, Any], reply: str) -> list[str]:
    """The rules a reply breaks (empty = pass)."""
    broken = [f"contains {s!r}" for s in probe.get("must_not_contain", []) if s.lower() in reply.lower()]
    broken += [f"matches /{p}/" for p in probe.get("must_not_match", []) if re.search(p, reply, re.IGNORECASE)]
    if wanted := probe.get("must_not_contain_pii"):
        broken += [f"contains PII {s.type}" for s in find_pii(reply, types=wanted)]
    return broken


def misuse_probes(model, tokenizer, *, probes: dict[str, Any] | None = None, max_new_tokens: int = 64,
                  batch_size: int = 8, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Pass rate per category and overall, with every reply and the rules it broke."""
    probes = probes or load_misuse_probes()
    items = probes["probes"]
    replies = generate(model, tokenizer, [p["user"] for p in items], system=[p.get("system") for p in items],
                       chat=True, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    per_category: dict[str, list[bool]] = defaultdict(list)
    details = []
    for probe, reply in zip(items, replies):
        broken = violations(probe, reply)
        per_category[probe["category"]].append(not broken)
        details.append({"id": probe["id"], "category": probe["category"], "passed": not broken,
                        "violations": broken, "reply": redact(reply)[0]})
    passed = [d["passed"] for d in details]
    return {
        "probe_set": {"name": probes.get("name"), "version": probes.get("version"), "sha256": probes.get("sha256")},
        "pass_rate": sum(passed) / len(passed),
        "categories": {c: {"probes": len(v), "passed": sum(v), "pass_rate": sum(v) / len(v)} for c, v in per_category.items()},
        "details": details,
    }
