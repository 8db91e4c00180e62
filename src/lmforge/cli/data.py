"""`lmforge data run | stats | card`: the curation pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import Text, check_at_least, console, print_table, progress_bar

data_app = typer.Typer(help="Curate corpora: clean, deduplicate, redact, decontaminate, document.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _print_steps(stats: dict) -> None:
    rows = []
    for key, step in stats["steps"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(step["dropped"].items(), key=lambda x: -x[1])[:4])
        rate = step["docs_in"] / step["seconds"] if step["seconds"] > 0 else None
        rows.append((key, step["docs_in"], step["docs_out"], step["docs_in"] - step["docs_out"], reasons or "-", rate))
    print_table("curation", ["step", "in", "out", "dropped", "top reasons", "docs/s"], rows)


@data_app.command("run")
def run_command(
    pipeline_file: Path = typer.Argument(..., help="pipeline YAML (input, steps, output)"),
    output: str = typer.Option(None, "--output", "-o", help="output folder (overrides output.dir)"),
    engine: str = typer.Option("local", help="local (process pool) | ray"),
    workers: int = typer.Option(None, help="worker processes for the local engine (default: all cores)"),
    overwrite: bool = typer.Option(False, help="start over instead of resuming an existing output folder"),
    card: bool = typer.Option(True, help="write card.md and card.html when done"),
) -> None:
    """Run a curation pipeline; rerunning the same command resumes where a killed run stopped."""
    from lmforge.data.curate import Pipeline
    from lmforge.data.curate.card import write_card
    from lmforge.runs import record_run

    check_at_least(1, workers=workers)
    pipeline = Pipeline.from_yaml(pipeline_file)
    if output:
        pipeline.output.dir = output
    config = {"pipeline": str(pipeline_file), "engine": engine, "workers": workers, "output": pipeline.output.dir}
    with record_run("data run", config=config, inputs={"pipeline": pipeline_file}) as run:
        shards = len(pipeline.input.shard_files())
        with progress_bar("curating (shard x stage)", shards * len(pipeline.stages())) as advance:
            stats = pipeline.run(engine=engine, workers=workers, overwrite=overwrite, progress=advance)
        run.log_metrics({"documents_in": stats["documents_in"], "documents_out": stats["documents_out"]})
        run.add_artifact("curated", pipeline.output.dir)
        if card:
            md, html = write_card(pipeline.output.dir)
            run.add_artifact("data_card", html)
    _print_steps(stats)
    empty = stats["steps"]["read"]["counters"].get("empty_files", {})
    if empty:
        console.print(Text.assemble((f"{len(empty)} input file(s) held no documents", "yellow"), f", e.g. {next(iter(empty))}"))
    console.print(f"{stats['documents_in']:,} documents in, {stats['documents_out']:,} out: {pipeline.output.dir}")
    if card:
        console.print(f"data card: {md} and {html}")


@data_app.command("stats")
def stats_command(directory: Path = typer.Argument(..., help="output folder of `lmforge data run`")) -> None:
    """Documents in and out per step, with drop reasons and speed."""
    from lmforge.data.curate import load_stats

    stats = load_stats(directory)
    _print_steps(stats)
    console.print(f"{stats['documents_in']:,} documents in, {stats['documents_out']:,} out")


@data_app.command("card")
def card_command(directory: Path = typer.Argument(..., help="output folder of `lmforge data run`")) -> None:
    """Write the data card (card.md with plots, and a self-contained card.html) for a finished run."""
    from lmforge.data.curate.card import write_card

    md, html = write_card(directory)
    console.print(f"wrote {md} and {html}")
