"""The data card of a curation run: what went in, what each step removed and why, what came out.

Written from ``stats.json`` alone (Markdown with PNG plots beside it, and one self-contained HTML file),
so a card can be rebuilt for any finished or resumed run.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from lmforge.data.curate.pipeline import load_stats
from lmforge.io import atomic_path


def _counter(stats: dict[str, Any], name: str) -> dict[str, int]:
    """A counter summed over every step that reported it."""
    total: dict[str, int] = {}
    for step in stats["steps"].values():
        for key, value in step["counters"].get(name, {}).items():
            total[key] = total.get(key, 0) + value
    return total


def card_sections(stats: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]], str]]:
    """(title, columns, rows, note) per table of the card."""
    sections = []
    steps = [[key, s["docs_in"], s["docs_out"], s["docs_in"] - s["docs_out"],
              ", ".join(f"{r} {n}" for r, n in sorted(s["dropped"].items(), key=lambda x: -x[1])) or "-",
              f"{s['docs_in'] / s['seconds']:.0f}" if s["seconds"] > 0 and s["docs_in"] else "-"]
             for key, s in stats["steps"].items()]
    sections.append(("Documents per step", ["step", "in", "out", "dropped", "reasons", "docs/s"], steps,
                     "Every dropped document is in exclusions/<step>/ with its reason and detail."))
    languages = _counter(stats, "languages")
    if languages:
        total = sum(languages.values())
        sections.append(("Language mix (before the language filter)", ["language", "documents", "share"],
                         [[k, v, f"{100 * v / total:.1f} %"] for k, v in sorted(languages.items(), key=lambda x: -x[1])], ""))
    lengths = _counter(stats, "length_words")
    if lengths:
        sections.append(("Length of output documents", ["words ≥", "documents"],
                         [[int(k), v] for k, v in sorted(lengths.items(), key=lambda x: int(x[0]))], ""))
    pii, pii_docs = _counter(stats, "pii"), _counter(stats, "pii_documents")
    sections.append(("PII found", ["type", "spans", "documents"],
                     [[k, v, pii_docs.get(k, 0)] for k, v in sorted(pii.items())] or [["none", 0, 0]],
                     "Spans were replaced by typed placeholders such as <EMAIL>."))
    contamination, ngrams = _counter(stats, "contamination_documents"), _counter(stats, "contamination_ngrams")
    sections.append(("Contamination with evaluation sets", ["task", "documents", "shared n-grams"],
                     [[k, v, ngrams.get(k, 0)] for k, v in sorted(contamination.items())] or [["none", 0, 0]],
                     "Word 13-gram overlap (lm-evaluation-harness style); contaminated documents were dropped."))
    clusters = {}
    for key, step in stats["steps"].items():
        for size, count in step["counters"].get("duplicate_cluster_sizes", {}).items():
            clusters.setdefault(key, []).append([key, int(size), count])
    sections.append(("Duplicate clusters", ["step", "cluster size", "clusters"],
                     [row for rows in clusters.values() for row in sorted(rows, key=lambda r: r[1])] or [["none", 0, 0]],
                     "One document per cluster is kept (the first in shard order)."))
    sentences = _counter(stats, "bias_sentences")
    if sentences:
        positive, negative = _counter(stats, "bias_positive"), _counter(stats, "bias_negative")
        sections.append(("Demographic terms and sentiment", ["group", "sentences", "with positive words", "with negative words", "negative share"],
                         [[g, n, positive.get(g, 0), negative.get(g, 0), f"{100 * negative.get(g, 0) / n:.1f} %"]
                          for g, n in sorted(sentences.items(), key=lambda x: -x[1])],
                         "Sentences mentioning a group's terms, and how many also hold a positive or negative word."))
    augmented, word_lists = _counter(stats, "augmented"), _counter(stats, "word_list")
    if word_lists:
        sections.append(("Counterfactual augmentation", ["word list", "documents read", "augmented documents", "swaps"],
                         [[name, n, augmented.get("documents", 0), augmented.get("swaps", 0)] for name, n in word_lists.items()],
                         "Each augmented document was joined by a copy with the list's words and names swapped."))
    return sections


def _plots(stats: dict[str, Any]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, bytes] = {}

    def save(name: str, fig) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        figures[name] = buffer.getvalue()

    def bars(name: str, labels: list[str], values: list[float], color: str, title: str, ylabel: str,
             size=(6, 3), rotation: int = 45) -> None:
        fig, ax = plt.subplots(figsize=size)
        ax.bar(labels, values, color=color)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=rotation, labelsize=8)
        save(name, fig)

    keys = list(stats["steps"])
    bars("steps.png", keys, [stats["steps"][k]["docs_out"] for k in keys], "#4c72b0",
         "Documents remaining after each step", "documents out", size=(8, 3.6), rotation=60)
    lengths = sorted(_counter(stats, "length_words").items(), key=lambda x: int(x[0]))
    if lengths:
        bars("lengths.png", [f"≥{k} words" for k, _ in lengths], [v for _, v in lengths], "#55a868",
             "Length of output documents", "documents")
    languages = sorted(_counter(stats, "languages").items(), key=lambda x: -x[1])[:12]
    if languages:
        bars("languages.png", [k for k, _ in languages], [v for _, v in languages], "#8172b2", "Language mix",
             "documents", rotation=0)

    sentences = _counter(stats, "bias_sentences")
    if any(n >= 10 for n in sentences.values()):
        negative, positive = _counter(stats, "bias_negative"), _counter(stats, "bias_positive")
        # shares from a handful of sentences are noise: plot groups mentioned in at least 10 (all are in the table)
        groups = sorted((g for g in sentences if sentences[g] >= 10), key=lambda g: -sentences[g])
        fig, ax = plt.subplots(figsize=(8, 3.4))
        xs = range(len(groups))
        ax.bar([x - 0.2 for x in xs], [positive.get(g, 0) / sentences[g] for g in groups], 0.4, label="positive", color="#55a868")
        ax.bar([x + 0.2 for x in xs], [negative.get(g, 0) / sentences[g] for g in groups], 0.4, label="negative", color="#c44e52")
        ax.set_xticks(list(xs), groups, rotation=60, fontsize=8)
        ax.set_ylabel("share of sentences")
        ax.set_title("Sentiment words next to demographic terms")
        ax.legend()
        save("bias.png", fig)
    return figures


def _markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "th{background:#f3f3f3}.note{color:#666;font-size:13px}img{max-width:100%}")


def write_card(directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``card.md`` (with PNG plots in ``card/``) and a self-contained ``card.html`` into ``directory``."""
    directory = Path(directory)
    stats = load_stats(directory)
    sections = card_sections(stats)
    figures = _plots(stats)
    title = f"Data card: {', '.join(stats['input']['paths'])}"
    summary = (f"{stats['documents_in']:,} documents in from {stats['input']['files']:,} files, "
               f"{stats['documents_out']:,} out ({stats['output']['format']} in {stats['output']['dir']}/data).")
    empty = stats["steps"]["read"]["counters"].get("empty_files", {})
    if empty:
        summary += f" {len(empty)} input file(s) were empty: {', '.join(sorted(empty)[:5])}."
    md = [f"# {title}", "", summary, ""]
    body = [f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"]
    for name, png in figures.items():
        with atomic_path(directory / "card" / name) as tmp:
            tmp.write_bytes(png)
    plot_after = {"Documents per step": "steps.png", "Language mix (before the language filter)": "languages.png",
                  "Length of output documents": "lengths.png", "Demographic terms and sentiment": "bias.png"}
    for section_title, columns, rows, note in sections:
        md += [f"## {section_title}", "", _markdown_table(columns, rows), ""]
        body.append(f"<h2>{html.escape(section_title)}</h2>{_html_table(columns, rows)}")
        if note:
            md += [note, ""]
            body.append(f"<p class='note'>{html.escape(note)}</p>")
        plot = plot_after.get(section_title)
        if plot in figures:
            md += [f"![{section_title}](card/{plot})", ""]
            encoded = base64.b64encode(figures[plot]).decode()
            body.append(f"<img alt='{html.escape(section_title)}' src='data:image/png;base64,{encoded}'>")
    md_path, html_path = directory / "card.md", directory / "card.html"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    with atomic_path(html_path) as tmp:
        tmp.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                       f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")
    return md_path, html_path
