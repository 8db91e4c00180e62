"""`lmforge report` (HTML model card + README.md from the run store) and `lmforge compare RUN_A RUN_B`."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import Text, check_outputs, console, fmt, print_table, save_json


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
    app.command("compare")(compare_command)


def report_command(
    runs: list[str] = typer.Option(None, "--runs", help="run ids, unique prefixes, 'latest' or a command name "
                                   "(repeat; default: every run in the store)"),
    out: str = typer.Option("report.html", "--out", "-o", help="the HTML report to write"),
    card: str = typer.Option(None, help="YAML file with what only you can state: license, intended_use, "
                             "acceptable_use_policy, release_date ... (example: lmforge/report/templates/"
                             "card.example.yaml)"),
    model_card: str = typer.Option("auto", help="README.md model card to write ('auto': README.md beside the "
                                   "report; 'none': skip)"),
    store: str = typer.Option(None, help="run store path (default .lmforge/runs.sqlite)"),
) -> None:
    """One self-contained HTML model card (plots inline) and a Hugging Face README.md, from the recorded runs."""
    from lmforge.report import build_report, load_card, select_runs
    from lmforge.report.build import card_target, report_summary
    from lmforge.runs import RunStore, record_run

    check_outputs(files=[out, None if model_card in ("auto", "none") else model_card])
    run_store = RunStore(store)
    card_path = None if model_card == "none" else model_card
    stated = load_card(card)
    select_runs(run_store, runs)  # bad input fails here, before a run is recorded
    card_target(Path(out), card_path)
    with record_run("report", config={"runs": runs, "out": out, "card": card}, inputs={"card": card} if card else {},
                    store=run_store, measure_energy=False) as run:
        path = build_report(run_store, runs, out, stated, card_path)
        summary = report_summary(path)
        run.log_metrics(summary)
        run.add_artifact("report", path)
    print_table("report", ["field", "value"], summary.items())
    console.print(f"wrote {path}" + ("" if card_path is None else " and the model card beside it"))


def compare_command(
    run_a: str = typer.Argument(..., help="baseline run (id, unique prefix or 'latest')"),
    run_b: str = typer.Argument(..., help="candidate run"),
    threshold: float = typer.Option(0.01, help="relative change for the worse that counts as a regression"),
    all_metrics: bool = typer.Option(False, "--all", help="also list metrics that did not change"),
    fail_on_regression: bool = typer.Option(False, help="exit with status 1 when any metric regressed (for CI)"),
    json_out: str = typer.Option(None, "--json", help="also write the comparison as JSON"),
    store: str = typer.Option(None, help="run store path"),
) -> None:
    """Metric by metric deltas between two runs, flagging regressions (lower ppl is better, higher acc is better)."""
    from lmforge.errors import LmforgeError
    from lmforge.report import compare_runs, regressions
    from lmforge.runs import RunStore

    if threshold < 0:
        raise LmforgeError(f"--threshold {threshold} is negative; give a relative change such as 0.01 (1 %)")
    check_outputs(files=[json_out])
    run_store = RunStore(store)
    a, b = run_store.get(run_a), run_store.get(run_b)
    deltas = compare_runs(a, b, threshold)
    shown = [d for d in deltas if all_metrics or d.verdict != "same"]
    verdict_style = {"regression": "bold red", "better": "green", "worse": "yellow"}
    print_table(f"{a.id} ({a.command}) → {b.id} ({b.command})", ["metric", "A", "B", "delta", "relative", "verdict"],
                [(d.metric, d.a, d.b, d.delta, f"{d.relative:+.2%}" if d.relative is not None else "-",
                  Text(d.verdict, style=verdict_style.get(d.verdict, ""))) for d in shown])
    bad = regressions(deltas)
    named = ": " + ", ".join(d.metric for d in bad) if bad else ""
    console.print(f"{len(bad)} regression(s) beyond {fmt(threshold * 100)} %{named}")
    save_json(json_out, {"a": a.id, "b": b.id, "threshold": threshold, "deltas": [d.to_dict() for d in deltas]})
    if bad and fail_on_regression:
        raise typer.Exit(1)
