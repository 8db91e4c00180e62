"""`lmforge runs list | show | export`."""

from __future__ import annotations

import json

import typer

from lmforge.cli.common import check_at_least, console, fmt, print_table
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
    check_at_least(1, limit=limit)
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


@runs_app.command("export")
def export_command(
    runs: list[str] = typer.Argument(None, help="run ids, unique prefixes, 'latest' or a command name (default: all)"),
    to: str = typer.Option("mlflow", "--to", help="where to: mlflow"),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlruns)"),
    experiment: str = typer.Option("lmforge", help="MLflow experiment name"),
    store: str = typer.Option(None, help="run store path"),
) -> None:
    """Copy runs to MLflow: params, metrics (with per-step history for training), tags, input hashes, artifacts."""
    from lmforge.errors import LmforgeError
    from lmforge.report import select_runs
    from lmforge.runs.mlflow_export import export_runs

    if to != "mlflow":
        raise LmforgeError(f"--to {to}: the only export target is mlflow")
    exported = export_runs(select_runs(RunStore(store), runs), tracking_uri, experiment)
    print_table(f"exported to MLflow experiment '{experiment}'", ["run", "MLflow run", ""],
                [(e.run_id, e.mlflow_run_id, "already there" if e.skipped else "written") for e in exported])
