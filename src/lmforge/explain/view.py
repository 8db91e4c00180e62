"""One self-contained HTML page for an explanation: attributions, logit lens and attention, no network needed."""

from __future__ import annotations

import json
from importlib import resources

import jinja2

from lmforge.explain.attention import attention_maps
from lmforge.explain.attributions import METHODS, attribute
from lmforge.explain.logit_lens import logit_lens


def explain(model, tokenizer, text: str, target: str, methods: tuple[str, ...] = METHODS, steps: int = 64,
            baseline: str = "eos", top_k: int = 5, attention: bool = True) -> dict:
    """Every explanation of why ``model`` continues ``text`` with ``target``, as one JSON-ready dict."""
    report = {
        "text": text,
        "target": target,
        "attributions": [attribute(model, tokenizer, text, target, m, steps, baseline).to_dict() for m in methods],
        "logit_lens": logit_lens(model, tokenizer, text, target=target, top_k=top_k).to_dict(),
    }
    if attention:
        report["attention"] = attention_maps(model, tokenizer, text).to_dict()
    return report


def render_html(report: dict, title: str | None = None) -> str:
    template = jinja2.Template(resources.files("lmforge.explain").joinpath("view.html.j2").read_text(encoding="utf-8"),
                               autoescape=True)
    # "</" inside a <script> block would end it early; JSON allows the escaped form.
    data = json.dumps(report).replace("</", "<\\/")
    return template.render(title=title or f"lmforge explain: {report['text']!r} → {report['target']!r}", data=data)
