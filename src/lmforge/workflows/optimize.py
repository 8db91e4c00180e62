"""Hardware-aware budget search: measure a grid of compression recipes on this machine, pick what fits.

Each recipe (pruning method × sparsity × pattern, then quantization method × bits ×
group size × output-head bits) is built from the same base model and measured here: perplexity on a
short slice, bytes as stored (bitmask + values for sparse float weights where that is
smaller, packed codes for quantized ones), and greedy decode tokens/s. Measurements
are cached on disk under a key of (model content hash, recipe, measurement settings),
so a second search with another budget costs nothing. The Pareto front is over
(size ↓, perplexity ↓, tokens/s ↑); the best recipe is the lowest-perplexity one that
meets every limit of the budget.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import io
import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from lmforge.compress import config_from_dict, prune, prune_then_quantize, quantize
from lmforge.compress.pruning.masks import parse_pattern
from lmforge.compress.storage.sparse import storage_bytes
from lmforge.data import load_corpus
from lmforge.errors import LmforgeError
from lmforge.evaluate import perplexity, speed
from lmforge.io import atomic_path, write_json
from lmforge.models import load_model
from lmforge.paths import cache_dir
from lmforge.runs import content_hash
from lmforge.workflows.prune import calibration as calibration_sample
from lmforge.workflows.prune import save_compressed, source_folder

MB = 1e6


@dataclass(frozen=True)
class Recipe:
    """One point of the grid. ``quant`` is ``none``, ``rtn``, ``gptq`` or ``awq``; ``sparsity`` 0 means no pruning;
    ``head_bits`` quantizes the output head too (``QuantConfig.lm_head_bits``), only with a ``quant``;
    ``shared_embeddings`` then reads the embeddings from that quantized head (``QuantConfig.share_embeddings``)."""

    quant: str = "none"
    bits: int | None = None
    group_size: int | None = None
    sparsity: float = 0.0
    pattern: str = "unstructured"
    prune_method: str = "wanda"
    head_bits: int | None = None
    shared_embeddings: bool = False

    @property
    def key(self) -> str:
        parts = []
        if self.sparsity:
            shape = f"{int(round(self.sparsity * 100))}%" if self.pattern == "unstructured" else self.pattern
            parts.append(f"{self.prune_method}-{shape}")
        if self.quant != "none":
            parts.append(f"{self.quant}-w{self.bits}" + (f"-g{self.group_size}" if self.group_size else ""))
            if self.head_bits:
                parts.append(f"head{self.head_bits}" + ("-shared" if self.shared_embeddings else ""))
        return "+".join(parts) or "dense"


@dataclass
class Budget:
    """Limits a recipe must meet; ``None`` leaves one open. ``max_ppl_increase`` is a fraction (0.1 = +10 %)."""

    max_mb: float | None = None
    min_tokens_per_s: float | None = None
    max_ppl_increase: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("--max-mb", self.max_mb), ("--min-tokens-per-s", self.min_tokens_per_s)):
            if value is not None and not value > 0:
                raise LmforgeError(f"{name} must be above 0 (got {value}): it is a budget the recipe must fit")
        if self.max_ppl_increase is not None and not self.max_ppl_increase >= 0:
            raise LmforgeError(f"--max-ppl-increase must be 0 or more (got {self.max_ppl_increase:.0%}), e.g. 10%")

    def shortfalls(self, m: "Measurement", base_ppl: float) -> dict[str, float]:
        """Relative amount by which ``m`` misses each limit (0 where met)."""
        misses = {}
        if self.max_mb is not None:
            misses["size"] = max(0.0, m.size_mb / self.max_mb - 1)
        if self.min_tokens_per_s is not None:
            misses["tokens/s"] = max(0.0, 1 - m.tokens_per_s / self.min_tokens_per_s)
        if self.max_ppl_increase is not None:
            misses["perplexity"] = max(0.0, (m.ppl / base_ppl - 1) - self.max_ppl_increase)
        return misses

    def describe(self) -> str:
        parts = []
        if self.max_mb is not None:
            parts.append(f"≤ {self.max_mb:g} MB")
        if self.min_tokens_per_s is not None:
            parts.append(f"≥ {self.min_tokens_per_s:g} tokens/s")
        if self.max_ppl_increase is not None:
            parts.append(f"perplexity ≤ +{self.max_ppl_increase * 100:g} %")
        return ", ".join(parts) or "no limits"


@dataclass
class Measurement:
    recipe: str
    settings: dict[str, Any]
    size_mb: float
    ppl: float
    tokens_per_s: float
    build_seconds: float
    cached: bool = False


@dataclass
class SearchResult:
    budget: dict[str, Any]
    measurements: list[Measurement]
    base_ppl: float
    front: list[str] = field(default_factory=list)
    best: str | None = None
    closest: str | None = None
    closest_misses: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def get(self, key: str) -> Measurement:
        return next(m for m in self.measurements if m.recipe == key)

    def no_fit_message(self) -> str:
        m = self.get(self.closest)
        misses = ", ".join(f"{name} by {value * 100:.0f} %" for name, value in self.closest_misses.items() if value > 0)
        return (
            f"no recipe meets the budget ({Budget(**self.budget).describe()}); closest: {m.recipe} at {m.size_mb:.1f} MB, "
            f"{m.tokens_per_s:.1f} tokens/s, perplexity {m.ppl:.2f} (+{(m.ppl / self.base_ppl - 1) * 100:.0f} %), "
            f"missing {misses}: relax the budget or widen the grid"
        )


def parse_fraction(text: str | float | None) -> float | None:
    """``"10%"`` → 0.1, ``"0.1"`` → 0.1; a user error otherwise."""
    if text is None or isinstance(text, float):
        return text
    value = str(text).strip()
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise LmforgeError(f"cannot read '{text}' as a fraction: write e.g. 10% or 0.1") from None


def recipe_grid(
    quants: list[str] = ("rtn",),
    bits: list[int] = (8, 4),
    group_sizes: list[int | None] = (64,),
    sparsities: list[float] = (0.0, 0.5),
    patterns: list[str] = ("unstructured",),
    prune_method: str = "wanda",
    head_bits: list[int | None] = (None,),
    shared_embeddings: bool = False,
) -> list[Recipe]:
    """The product grid, plus each pruning setting without quantization; dense first."""
    prunings = [(0.0, "unstructured")]
    for sparsity, pattern in itertools.product(sparsities, patterns):
        nm = parse_pattern(pattern)
        if nm is not None:
            prunings.append((nm.sparsity, str(nm)))
        elif sparsity:
            prunings.append((float(sparsity), "unstructured"))
    quantizations = [("none", None, None, None)] + [
        (q, b, g, h) for q in quants if q != "none" for b in bits for g in group_sizes for h in head_bits]
    recipes = [Recipe(q, b, g, s, p, prune_method, h, shared_embeddings and h is not None)
               for (s, p), (q, b, g, h) in itertools.product(dict.fromkeys(prunings), quantizations)]
    return list(dict.fromkeys(recipes))


def apply_recipe(model, recipe: Recipe, calibration: torch.Tensor | None) -> None:
    """Prune then quantize ``model`` in place as ``recipe`` says."""
    if recipe.quant not in {"none", "rtn", "gptq", "awq"}:
        raise LmforgeError(f"unknown quantization method '{recipe.quant}': use none, rtn, gptq or awq")
    pruning = (config_from_dict({"method": recipe.prune_method, "sparsity": recipe.sparsity, "pattern": recipe.pattern})
               if recipe.sparsity else None)
    quant = (config_from_dict({"method": recipe.quant, "bits": recipe.bits, "group_size": recipe.group_size,
                               "lm_head_bits": recipe.head_bits, "share_embeddings": recipe.shared_embeddings})
             if recipe.quant != "none" else None)
    if pruning and quant:
        prune_then_quantize(model, pruning, quant, calibration)
    elif pruning:
        prune(model, pruning, calibration)
    elif quant:
        quantize(model, quant, calibration)


def _cache_file(model_hash: str, recipe: Recipe, settings: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps([model_hash, asdict(recipe), settings], sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "optimize" / f"{recipe.key.replace('%', 'pct').replace(':', 'of')}-{digest}.json"


def measure(
    model,
    tokenizer,
    recipe: Recipe,
    *,
    model_hash: str,
    corpus,
    calibration: torch.Tensor | None,
    settings: dict[str, Any],
) -> Measurement:
    """Build ``recipe`` on a copy of ``model`` and measure it, or read the cached measurement."""
    cache = _cache_file(model_hash, recipe, settings)
    if cache.is_file():
        return Measurement(**{**json.loads(cache.read_text()), "cached": True})
    candidate = copy.deepcopy(model)
    started = time.perf_counter()
    apply_recipe(candidate, recipe, calibration)
    build_seconds = time.perf_counter() - started
    ppl = perplexity(candidate, tokenizer, corpus, protocol="windows", seqlen=settings["ppl_seqlen"], limit=settings["ppl_windows"]).ppl
    timing = speed(candidate, tokenizer, prompt_tokens=settings["prompt_tokens"], new_tokens=settings["new_tokens"],
                   batch_sizes=(1,), repeats=settings["repeats"])
    measurement = Measurement(recipe.key, asdict(recipe), storage_bytes(candidate) / MB, ppl,
                              timing["decode_tokens_per_s"], build_seconds)
    write_json(cache, asdict(measurement))
    return measurement


def pareto_front(measurements: list[Measurement]) -> list[str]:
    """Recipes no other recipe beats on size, perplexity and tokens/s at once."""
    def dominates(a: Measurement, b: Measurement) -> bool:
        no_worse = a.size_mb <= b.size_mb and a.ppl <= b.ppl and a.tokens_per_s >= b.tokens_per_s
        better = a.size_mb < b.size_mb or a.ppl < b.ppl or a.tokens_per_s > b.tokens_per_s
        return no_worse and better

    return [m.recipe for m in measurements if not any(dominates(o, m) for o in measurements if o is not m)]


def search(
    model,
    tokenizer,
    budget: Budget,
    recipes: list[Recipe],
    *,
    model_hash: str,
    corpus,
    calibration: torch.Tensor | None,
    ppl_windows: int = 8,
    ppl_seqlen: int = 512,
    prompt_tokens: int = 32,
    new_tokens: int = 32,
    repeats: int = 2,
    progress: Callable[[int], None] | None = None,
    log: Callable[[Measurement], None] | None = None,
) -> SearchResult:
    """Measure every recipe (dense first, as the baseline), find the front, the best fit or the closest miss."""
    if not recipes or recipes[0].key != "dense":
        recipes = [Recipe(), *[r for r in recipes if r.key != "dense"]]
    settings = {"ppl_windows": ppl_windows, "ppl_seqlen": ppl_seqlen, "prompt_tokens": prompt_tokens,
                "new_tokens": new_tokens, "repeats": repeats, "threads": torch.get_num_threads(),
                "calibration": list(calibration.shape) if calibration is not None else None,
                "calibration_hash": hashlib.sha256(calibration.numpy().tobytes()).hexdigest()[:16] if calibration is not None else None}
    measurements = []
    for recipe in recipes:
        measurements.append(measure(model, tokenizer, recipe, model_hash=model_hash, corpus=corpus,
                                    calibration=calibration, settings=settings))
        if log:
            log(measurements[-1])
        if progress:
            progress(1)
    base = measurements[0].ppl
    result = SearchResult(budget=asdict(budget), measurements=measurements, base_ppl=base, front=pareto_front(measurements))
    fits = [m for m in measurements if not any(budget.shortfalls(m, base).values())]
    if fits:
        result.best = min(fits, key=lambda m: (m.ppl, m.size_mb)).recipe
    else:
        closest = min(measurements, key=lambda m: sum(budget.shortfalls(m, base).values()))
        result.closest, result.closest_misses = closest.recipe, budget.shortfalls(closest, base)
    return result


def plot_front(result: SearchResult, png: str | Path, html_path: str | Path, title: str) -> None:
    """Size vs perplexity (colour: tokens/s), the front joined and labelled, budget limits dashed; PNG and HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = [m.size_mb for m in result.measurements]
    ys = [m.ppl for m in result.measurements]
    points = ax.scatter(xs, ys, c=[m.tokens_per_s for m in result.measurements], cmap="viridis", s=50, zorder=3)
    fig.colorbar(points, ax=ax, label="decode tokens/s")
    front = sorted((result.get(k) for k in result.front), key=lambda m: m.size_mb)
    ax.plot([m.size_mb for m in front], [m.ppl for m in front], color="tab:red", lw=1, zorder=2, label="Pareto front")
    for m in result.measurements:
        ax.annotate(m.recipe, (m.size_mb, m.ppl), fontsize=7, xytext=(4, 3), textcoords="offset points",
                    fontweight="bold" if m.recipe == result.best else "normal")
    budget = Budget(**result.budget)
    if budget.max_mb is not None:
        ax.axvline(budget.max_mb, ls="--", color="gray", label="size limit")
    if budget.max_ppl_increase is not None:
        ax.axhline(result.base_ppl * (1 + budget.max_ppl_increase), ls=":", color="gray", label="perplexity limit")
    ax.set_xlabel("stored size (MB)")
    ax.set_ylabel("perplexity (short slice)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    with atomic_path(png) as tmp:
        tmp.write_bytes(buffer.getvalue())
    rows = "".join(
        f"<tr><td>{html.escape(m.recipe)}{' ★' if m.recipe == result.best else ''}</td><td>{m.size_mb:.1f}</td>"
        f"<td>{m.ppl:.2f}</td><td>{(m.ppl / result.base_ppl - 1) * 100:+.1f} %</td><td>{m.tokens_per_s:.1f}</td>"
        f"<td>{'yes' if m.recipe in result.front else ''}</td></tr>"
        for m in result.measurements
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Budget: {html.escape(budget.describe())}</p>"
        f"<img alt='size vs perplexity' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
        "<table border='1' cellpadding='4'><tr><th>recipe</th><th>MB</th><th>ppl</th><th>Δ ppl</th><th>tokens/s</th>"
        f"<th>front</th></tr>{rows}</table></body></html>"
    )
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")


def optimize(model: str, budget: Budget, recipes: list[Recipe], *, corpus: str = "wikitext2", ppl_windows: int = 8,
             ppl_seqlen: int = 512, calib: str = "web_articles", calib_samples: int = 8, calib_seqlen: int = 512,
             plot: Path = Path("optimize-front"), out: Path | None = None,
             progress: Callable[[int], None] | None = None, log: Callable[[Measurement], None] | None = None,
             ) -> tuple[SearchResult, list[Path]]:
    """Measure ``recipes`` on ``model``, plot the front (``plot``.png and .html) and, when a recipe fits the budget
    and ``out`` is given, write that model; returns the search and the files written."""
    loaded, tokenizer = load_model(model)
    if any(r.shared_embeddings for r in recipes) and not getattr(loaded.config, "tie_word_embeddings", False):
        raise LmforgeError(f"--share-embeddings needs a head tied to the embeddings, and {model}'s are separate: drop it")
    folder = source_folder(model)
    needs_calibration = any(r.sparsity and r.prune_method != "magnitude" or r.quant in {"gptq", "awq"} for r in recipes)
    calibration = calibration_sample(tokenizer, calib, calib_samples, calib_seqlen) if needs_calibration else None
    result = search(loaded, tokenizer, budget, recipes, model_hash=content_hash(folder) if folder else model,
                    corpus=load_corpus(corpus), calibration=calibration, ppl_windows=ppl_windows,
                    ppl_seqlen=ppl_seqlen, progress=progress, log=log)
    written = [plot.with_suffix(".png"), plot.with_suffix(".html")]
    plot_front(result, *written, f"{model}: size, perplexity and speed of {len(result.measurements)} recipes")
    if result.best is not None and out:
        best = next(r for r in recipes if r.key == result.best)
        apply_recipe(loaded, best, calibration)
        save_compressed(loaded, tokenizer, out, {"recipe": best.key}, sparse=bool(best.sparsity))
        written.append(Path(out))
    return result, written
