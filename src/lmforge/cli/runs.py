"""`lmforge runs list | show`."""

from __future__ import annotations

import json

import typer

from lmforge.cli.common import console, fmt, print_table
from lmforge.runs import RunStore

runs_app = typer.Typer(help="The run store: what every command did.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


_HEADLINE_KEYS = ("ppl", "word_perplexity", "acc", "acc_norm", "pct_stereotype", "decode_tokens_per_s", "final_eval_loss")


def _headline(metrics: dict) -> str:
    """The few metrics that say most: quality first, then anything numeric."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ranked = sorted(numeric, key=lambda k: next((i for i, s in enumerate(_HEADLINE_KEYS) if k.endswith(s)), 99))
    return ", ".join(f"{k}={fmt(numeric[k])}" for k in ranked[:3])


@runs_app.command("list")
def list_command(
    limit: int = typer.Option(20, help="most recent N runs"),
    command: str = typer.Option(None, help="only runs of this command"),
    store: str = typer.Option(None, help="run store path (default .lmforge/runs.sqlite)"),
) -> None:
    """Recent runs, newest first."""
    runs = RunStore(store).list(limit=limit, command=command)
    print_table("runs", ["id", "command", "status", "started (UTC)", "seconds", "metrics"],
                [(r.id, r.command, r.status, r.started_iso[:16].replace("T", " "), r.seconds, _headline(r.metrics))
                 for r in runs])


@runs_app.command("show")
def show_command(
    run_id: str = typer.Argument(..., help="run id, unique prefix, or 'latest'"),
    store: str = typer.Option(None, help="run store path"),
) -> None:
    """Everything recorded for one run, as JSON."""
    console.print_json(json.dumps(RunStore(store).get(run_id).to_dict(), default=str))
