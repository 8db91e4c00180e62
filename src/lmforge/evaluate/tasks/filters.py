"""lm-eval's response filters (``filter_list``): each named pipeline turns a generation into the answer it is scored on."""

from __future__ import annotations

import re
from typing import Any, Callable

from lmforge.errors import LmforgeError


def regex(pattern: str = r"#### (\-?[0-9\.\,]+)", group_select: int = 0, fallback: str = "[invalid]") -> Callable[[str], str]:
    """The ``group_select``-th match of ``pattern`` (first non-empty group when it has several), stripped."""
    compiled = re.compile(pattern)

    def apply(text: str) -> str:
        matches = compiled.findall(text if isinstance(text, str) else "")
        if not matches:
            return fallback
        match = matches[group_select]
        if isinstance(match, tuple):
            match = next((m for m in match if m), fallback)
        return match.strip()

    return apply


def _mapping(mapping_dict: dict | None = None, default_value: Any = None) -> Callable[[str], Any]:
    return lambda text: (mapping_dict or {}).get(text, default_value)


# Every filter acts on one response (lmforge decodes once per document: repeats is 1, so take_first is the identity).
FILTERS: dict[str, Callable[..., Callable[[Any], Any]]] = {
    "regex": lambda regex_pattern=r"#### (\-?[0-9\.\,]+)", group_select=0, fallback="[invalid]":
        regex(regex_pattern, group_select, fallback),
    "take_first": lambda: (lambda text: text),
    "lowercase": lambda: str.lower,
    "uppercase": lambda: str.upper,
    "remove_whitespace": lambda: str.strip,
    "map": _mapping,
}


def build_pipeline(name: str, steps: list[dict[str, Any]], task: str) -> Callable[[str], Any]:
    functions = []
    for step in steps:
        kind = step.get("function")
        if kind not in FILTERS:
            raise LmforgeError(f"task {task}: filter '{name}' uses the filter function '{kind}', which lmforge does not "
                               f"support ({', '.join(FILTERS)})")
        try:
            functions.append(FILTERS[kind](**{k: v for k, v in step.items() if k != "function"}))
        except TypeError as exc:
            raise LmforgeError(f"task {task}: filter '{name}' step '{kind}': {exc}") from None

    def apply(text: str) -> Any:
        for function in functions:
            text = function(text)
        return text

    return apply


def pipelines(filter_list: list[dict[str, Any]] | None, task: str) -> dict[str, Callable[[str], Any]]:
    """name -> pipeline; lm-eval's default is one pipeline named 'none' that takes the first response."""
    if not filter_list:
        return {"none": lambda text: text}
    return {f["name"]: build_pipeline(f["name"], f.get("filter", []), task) for f in filter_list}
