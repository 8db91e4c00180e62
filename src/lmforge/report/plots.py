"""Report figures: matplotlib, rendered to PNG and embedded as base64 so the HTML stays one file."""

from __future__ import annotations

import base64
import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"]
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "axes.edgecolor": "#94a3b8",
    "axes.labelcolor": "#334155", "xtick.color": "#475569", "ytick.color": "#475569",
}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _legend_below(ax, columns: int, rotated_ticks: bool = False) -> None:
    """A legend under the axes, where it never hides data."""
    ax.legend(frameon=False, fontsize=8, loc="upper center", ncol=columns,
              bbox_to_anchor=(0.5, -0.24 if rotated_ticks else -0.16))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (smaller x and smaller y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def quality_vs_size(points: list[dict], quality_label: str) -> str:
    """Scatter of size (MB) against a lower-is-better quality metric, with the Pareto front drawn."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        xy = [(p["size_mb"], p["quality"]) for p in points]
        front = pareto_front(xy)
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "-", color="#94a3b8", lw=1.2, zorder=1,
                label="Pareto front")
        for i, point in enumerate(points):
            ax.scatter(point["size_mb"], point["quality"], s=46, zorder=2, color=PALETTE[i % len(PALETTE)],
                       edgecolor="white", linewidth=0.8)
            ax.annotate(point["label"], (point["size_mb"], point["quality"]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8, color="#1e293b")
        ax.set_xlabel("model size (MB)")
        ax.set_ylabel(quality_label)
        ax.set_title("Quality against size (lower-left is better)")
        ax.margins(x=0.2, y=0.15)
        _legend_below(ax, 1)
        return _png(fig)


def grouped_bars(categories: list[str], series: dict[str, list[tuple[float, float | None, float | None]]],
                 title: str, ylabel: str, reference: float | None = None, horizontal: bool = True) -> str:
    """Bars per category for each series, with optional (low, high) intervals and a reference line."""
    with plt.rc_context(_STYLE):
        height = max(2.6, 0.32 * len(categories) * max(1, len(series)) + 0.9) if horizontal else 3.6
        fig, ax = plt.subplots(figsize=(6.4, height))
        width = 0.8 / max(1, len(series))
        for s, (name, values) in enumerate(series.items()):
            positions = [c + (s - (len(series) - 1) / 2) * width for c in range(len(categories))]
            centers = [v[0] for v in values]
            errors = None
            if any(v[1] is not None for v in values):
                errors = [[max(0.0, v[0] - v[1]) if v[1] is not None else 0.0 for v in values],
                          [max(0.0, v[2] - v[0]) if v[2] is not None else 0.0 for v in values]]
            bar = ax.barh if horizontal else ax.bar
            bar(positions, centers, width * 0.92, color=PALETTE[s % len(PALETTE)], label=name,
                **({"xerr": errors} if horizontal else {"yerr": errors}), error_kw={"elinewidth": 1, "capsize": 2})
        ticks = range(len(categories))
        if horizontal:
            ax.set_yticks(list(ticks), categories)
            ax.invert_yaxis()
            ax.set_xlabel(ylabel)
            if reference is not None:
                ax.axvline(reference, color="#475569", ls="--", lw=1)
        else:
            ax.set_xticks(list(ticks), categories, rotation=20, ha="right")
            ax.set_ylabel(ylabel)
            if reference is not None:
                ax.axhline(reference, color="#475569", ls="--", lw=1)
        ax.set_title(title)
        if len(series) > 1:
            _legend_below(ax, min(2, len(series)), rotated_ticks=not horizontal)
        return _png(fig)
