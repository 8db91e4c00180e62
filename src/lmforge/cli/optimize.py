"""`lmforge optimize MODEL --max-mb … --min-tokens-per-s … --max-ppl-increase …`: the recipe that fits a budget."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import Text, check_at_least, check_outputs, console, overwrite_option, print_table, progress_bar, save_json
from lmforge.errors import LmforgeError
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize_command)


def _split(text: str, cast=str) -> list:
    try:
        return [None if item.strip().lower() in {"none", "channel"} else cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise LmforgeError(f"cannot read the list '{text}': write comma-separated values such as 4,8") from None


def optimize_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    max_mb: float = typer.Option(None, help="largest acceptable stored size in MB"),
    min_tokens_per_s: float = typer.Option(None, help="slowest acceptable decode speed (batch 1)"),
    max_ppl_increase: str = typer.Option(None, help="largest acceptable perplexity increase, e.g. 10%"),
    quants: str = typer.Option("rtn", help="quantization methods: rtn,gptq,awq"),
    bits: str = typer.Option("8,4", help="bit widths"),
    group_sizes: str = typer.Option("64", help="group sizes (none = per channel)"),
    sparsities: str = typer.Option("0,0.5", help="unstructured sparsities (0 = no pruning)"),
    patterns: str = typer.Option("unstructured", help="unstructured and/or N:M patterns, e.g. unstructured,2:4"),
    prune_method: str = typer.Option("wanda", help="magnitude | wanda | sparsegpt"),
    head_bits: str = typer.Option("none", help="output-head bits with each quantization, e.g. none,8 (8: int8 per "
                                               "channel, the head untied from the embeddings)"),
    share_embeddings: bool = typer.Option(False, help="with --head-bits on a tied model: the embeddings read the quantized "
                                          "head (one table for both)"),
    corpus: str = typer.Option("wikitext2", help="perplexity corpus"),
    ppl_windows: int = typer.Option(8), ppl_seqlen: int = typer.Option(512),
    calib: str = typer.Option("web_articles"), calib_samples: int = typer.Option(8), calib_seqlen: int = typer.Option(512),
    out: Path = typer.Option(None, "-o", "--out", help="write the best model here"),
    plot: Path = typer.Option(Path("optimize-front"), help="plot path stem: writes STEM.png and STEM.html"),
    json_out: Path = typer.Option(None, "--json"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Measure a grid of compression recipes on this machine, print the Pareto front, pick the best fit."""
    from lmforge.models import model_input
    from lmforge.workflows.optimize import Budget, optimize, parse_fraction, recipe_grid

    budget = Budget(max_mb, min_tokens_per_s, parse_fraction(max_ppl_increase))
    check_at_least(1, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen, calib_samples=calib_samples, calib_seqlen=calib_seqlen)
    check_outputs(out, "model", overwrite, files=[json_out, plot.with_suffix(".png"), plot.with_suffix(".html")], inputs=[model])
    recipes = recipe_grid(_split(quants), _split(bits, int), _split(group_sizes, int), _split(sparsities, float),
                          _split(patterns), prune_method, _split(head_bits, int), share_embeddings)
    settings = {"budget": vars(budget), "recipes": [r.key for r in recipes], "corpus": corpus, "ppl_windows": ppl_windows,
                "ppl_seqlen": ppl_seqlen, "calib": calib, "calib_samples": calib_samples, "calib_seqlen": calib_seqlen}
    with record_run("optimize", config=settings, inputs={"model": model_input(model)}) as run:
        with progress_bar("measuring recipes", total=len(recipes) + 1) as advance:
            result, written = optimize(
                model, budget, recipes, corpus=corpus, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen, calib=calib,
                calib_samples=calib_samples, calib_seqlen=calib_seqlen, plot=plot, out=out, progress=advance,
                log=lambda m: console.print(f"{m.recipe}: {m.size_mb:.1f} MB, ppl {m.ppl:.2f}, "
                                            f"{m.tokens_per_s:.1f} tok/s{' (cached)' if m.cached else ''}"))
        run.add_artifact("plot", written[0])
        run.log_metrics({"recipes": len(result.measurements), "front": len(result.front), "best": result.best or "none"})
        rows = [(m.recipe, m.size_mb, m.ppl, f"{(m.ppl / result.base_ppl - 1) * 100:+.1f} %", m.tokens_per_s,
                 "★" if m.recipe == result.best else ("front" if m.recipe in result.front else ""))
                for m in sorted(result.measurements, key=lambda m: m.size_mb)]
        print_table(f"recipes on this machine (budget: {budget.describe()})", ["recipe", "MB", "ppl", "Δ ppl", "tokens/s", ""], rows)
        console.print(f"wrote {written[0]} and {written[1]}")
        save_json(json_out, result.to_dict())
        if result.best is None:
            raise LmforgeError(result.no_fit_message())
        console.print(Text.assemble("best recipe within the budget: ", (str(result.best), "bold")))
        if out:
            run.add_artifact("model", out)
            console.print(f"wrote {out}")
