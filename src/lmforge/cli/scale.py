"""`lmforge scale`: a ladder of sizes × token budgets, the fitted scaling law, a held-out prediction, a plan."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import Text, check_at_least, check_outputs, console, fmt, print_table, progress_bar, save_json, set_threads
from lmforge.errors import LmforgeError
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("scale")(scale_command)


def scale_command(
    sizes: str = typer.Option("32x2,48x3,64x4,96x4", help="model sizes as WIDTHxLAYERS, comma-separated"),
    budgets: str = typer.Option("524288,1048576,2097152", help="token budgets, comma-separated (the defaults: about 20 min of one core)"),
    holdout: str = typer.Option("128x6@2097152", help="a larger WIDTHxLAYERS@TOKENS run to predict ('' for none)"),
    corpus: str = typer.Option("wikitext2,web_articles", help="corpus (names or paths, comma-separated)"),
    vocab_size: int = typer.Option(2048, help="BPE vocabulary trained on the corpus"),
    context_length: int = typer.Option(128),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(3e-3),
    flop_budget: float = typer.Option(1e18, help="FLOPs to plan compute-optimal N and D for"),
    bootstrap: int = typer.Option(100, help="bootstrap refits for the intervals"),
    from_json: Path = typer.Option(None, help="refit a ladder.json written before instead of training"),
    out: Path = typer.Option(None, "--out", "-o", help="folder for ladder.json and the plots (default: the run's artifacts)"),
    threads: int = typer.Option(1, help="torch intra-op threads (1 suits these tiny models)"),
    json_out: str = typer.Option(None, "--json", help="also write the result as JSON"),
) -> None:
    """Train a ladder of sizes × token budgets, fit L(N, D) = E + A/N^α + B/D^β, predict a larger run, plan N and D."""
    from lmforge.workflows.scale import ladder_rungs, run_ladder

    check_at_least(1, vocab_size=vocab_size, context_length=context_length, batch_size=batch_size, bootstrap=bootstrap,
                   threads=threads)
    if lr <= 0 or flop_budget <= 0:
        raise LmforgeError(f"--lr and --flop-budget must be above 0 (got {lr}, {flop_budget})")
    check_outputs(files=[json_out, out and out / "ladder.json"])
    set_threads(threads)
    settings = dict(sizes=sizes, budgets=budgets, holdout=holdout, corpus=corpus, vocab_size=vocab_size,
                    context_length=context_length, batch_size=batch_size, lr=lr, flop_budget=flop_budget,
                    bootstrap=bootstrap, from_json=str(from_json) if from_json else None)
    rungs = from_json or ladder_rungs(sizes, budgets, holdout)
    with record_run("scale", config=settings, inputs={"corpus": corpus}) as run:
        out_dir = out or run.artifacts_dir
        with progress_bar("ladder", total=None if from_json else len(rungs)) as advance:
            result, plots = run_ladder(rungs, out_dir, corpus=corpus, vocab_size=vocab_size, context_length=context_length,
                                       batch_size=batch_size, lr=lr, flop_budget=flop_budget, bootstrap=bootstrap,
                                       log=console.print, progress=advance)
        rungs = result.rungs
        run.log_metrics({"law": result.law.to_dict(), "predicted_loss": result.predicted_loss,
                         "relative_error": result.relative_error, "compute_optimal": result.compute_optimal,
                         "rungs": len(rungs)})
        run.add_artifact("ladder", out_dir / "ladder.json")
        for path in plots:
            run.add_artifact(path.stem, path)

    law = result.law
    print_table("ladder", ["size", "N (non-emb.)", "D (tokens)", "eval loss", "fitted", "tok/s"], [
        (f"{r.width}x{r.layers}" + (" held out" if r.held_out else ""), r.non_embedding_params, r.tokens,
         r.eval_loss, float(law.predict(r.non_embedding_params, r.tokens)), round(r.tokens_per_s))
        for r in rungs])
    interval = law.intervals
    rows = [(name, getattr(law, name), f"{interval[name][0]:.4g} – {interval[name][1]:.4g}" if name in interval else "-")
            for name in ("E", "A", "alpha", "B", "beta")]
    print_table(f"L(N, D) = E + A/N^α + B/D^β (Huber δ=1e-3 on log loss; 80% bootstrap intervals, "
                f"{interval.get('bootstrap_samples', 0)} refits)", ["parameter", "value", "interval"], rows)
    if result.held_out:
        low, high = result.prediction_interval or (float("nan"), float("nan"))
        print_table("held-out prediction", ["", "value"], [
            ("run", f"{result.held_out.width}x{result.held_out.layers} on {result.held_out.tokens:,} tokens"),
            ("measured loss", result.held_out.eval_loss), ("predicted loss", result.predicted_loss),
            ("80% interval", f"{low:.4f} – {high:.4f}"), ("relative error", f"{result.relative_error:+.2%}")])
    if result.compute_optimal:
        plan = result.compute_optimal
        print_table(f"compute-optimal for C = {fmt(plan['flops'])} FLOPs (C ≈ 6·N·D)", ["", "value"], [
            ("N (non-embedding params)", plan["n_params"]), ("D (tokens)", plan["tokens"]),
            ("tokens per parameter", plan["tokens_per_param"]), ("predicted loss", plan["predicted_loss"])])
    for warning in result.warnings:
        console.print(Text.assemble(("warning:", "yellow"), f" {warning}"))
    console.print(f"plots: {', '.join(str(p) for p in plots)}")
    save_json(json_out, {**result.to_dict(), "energy": run.record.energy, "run": run.id})
