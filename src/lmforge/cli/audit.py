"""`lmforge audit MODEL --suite bias,privacy,robustness,misuse [--compare OTHER]`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lmforge.audit.bias import sentiment_available, sentiment_scorer
from lmforge.cli.audit_tables import print_comparison, print_report
from lmforge.cli.common import check_at_least, check_outputs, console, device_option, dtype_option, err_console, record_precision, save_json
from lmforge.data import read_documents
from lmforge.errors import LmforgeError
from lmforge.io import write_json
from lmforge.models import model_input
from lmforge.runs import record_run
from lmforge.workflows.audit import SUITES, audit_models, compare_audits, headline, parse_suites


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)


@contextlib.contextmanager
def section_progress() -> Iterator[Callable[[str], Callable[[int], None]]]:
    """One progress line per audit section; each section counts the items it has scored."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        def section(name: str) -> Callable[[int], None]:
            task = progress.add_task(name, total=None)
            return lambda n=1: progress.advance(task, n)
        yield section


def _canaries(values: list[str] | None) -> list[dict[str, str]]:
    canaries = []
    for value in values or []:
        prefix, sep, secret = value.rpartition("|")
        if not sep or not secret:
            raise LmforgeError(f"--canary {value!r} must be 'PREFIX|SECRET', e.g. 'my PIN is |4921'")
        canaries.append({"prefix": prefix, "secret": secret})
    return canaries


def audit_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    suite: str = typer.Option(",".join(SUITES), help=f"comma-separated: {', '.join(SUITES)}"),
    compare: str = typer.Option(None, help="a second model to audit the same way and compare against MODEL"),
    limit: int = typer.Option(None, help="CrowS-Pairs pairs and robustness questions per task (default: all pairs, 200 questions)"),
    batch_size: int = typer.Option(8, help="sequences per forward pass (results do not depend on it)"),
    resamples: int = typer.Option(1000, help="bootstrap resamples for the intervals"),
    seed: int = typer.Option(0, help="seed for perturbations, sampling and bootstrap"),
    sentiment: bool = typer.Option(None, "--sentiment/--no-sentiment",
                                   help="score generated continuations with VADER (default: when the audit extra is installed)"),
    members: Path = typer.Option(None, help="privacy: texts the model was trained on (txt/jsonl/parquet)"),
    nonmembers: Path = typer.Option(None, help="privacy: held-out texts from the same distribution"),
    canary: list[str] = typer.Option(None, help="privacy: 'PREFIX|SECRET' inserted in the training text (repeatable)"),
    bbq_file: list[Path] = typer.Option(None, help="BBQ: a BBQ-format jsonl to score instead of the shipped categories (repeatable)"),
    text_field: str = typer.Option("text", help="jsonl/parquet field holding the text of --members/--nonmembers"),
    json_out: str = typer.Option(None, "--json", help="write the full report to this JSON file"),
    data_dir: str = typer.Option(None, help="folder with the named data sets (default ../shared/data)"),
    trust_remote_code: bool = typer.Option(False, help="run the model's own code (only for authors you trust)"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> dict[str, Any]:
    """Audit bias, privacy, robustness and misuse; with --compare, show the other model's deltas."""
    suites = parse_suites(suite)
    if sentiment is None:
        sentiment = sentiment_available()
        if not sentiment and "bias" in suites:
            console.print("note: no sentiment gap (VADER is not installed): pip install 'lmforge[audit]'")
    elif sentiment and "bias" in suites:
        sentiment_scorer()  # fail now, before any model is loaded, if VADER is missing
    check_at_least(1, limit=limit, batch_size=batch_size, resamples=resamples)
    check_outputs(files=[json_out])
    if (members is None) != (nonmembers is None):
        raise LmforgeError("membership signals need both --members and --nonmembers (texts from one distribution)")
    member_texts = list(read_documents(members, text_field)) if members else None
    nonmember_texts = list(read_documents(nonmembers, text_field)) if nonmembers else None
    options = dict(limit=limit, batch_size=batch_size, resamples=resamples, seed=seed, sentiment=sentiment,
                   members=member_texts, nonmembers=nonmember_texts, canaries=_canaries(canary), data=data_dir,
                   bbq_files=bbq_file or None)
    config = {"model": model, "compare": compare, "suites": suites, "dtype": dtype, "device": device, **{k: v for k, v in options.items()
                                                                      if k not in {"members", "nonmembers", "bbq_files"}},
              "bbq_files": [str(p) for p in bbq_file or []]}
    inputs = {name: model_input(name) for name in filter(None, [model, compare])}
    inputs.update({k: v for k, v in {"members": members, "nonmembers": nonmembers}.items() if v})
    inputs.update({f"bbq_file_{i}": path for i, path in enumerate(bbq_file or [])})
    with record_run("audit", config=config, inputs=inputs) as run:
        def report(name: str, result: dict[str, Any]) -> None:
            print_report(name, result)
            run.log_metrics(headline(result, prefix="" if name == model else "compare."))

        reports = audit_models(list(filter(None, [model, compare])), suites, trust_remote_code=trust_remote_code,
                               dtype=dtype, device=device, progress=section_progress,
                               on_loaded=lambda loaded: record_precision(run, loaded), on_report=report, **options)
        result: dict[str, Any] = {"model": model, "run_id": run.id, "report": reports[model]}
        if compare:
            result |= {"compare": compare, "compare_report": reports[compare],
                       "comparison": compare_audits(reports[model], reports[compare], resamples, seed)}
            print_comparison(model, compare, result["comparison"])
        run.add_artifact("report", write_json(run.artifacts_dir / "audit.json", result))
        save_json(json_out, result)
    console.print(f"run {run.id} recorded")
    return result
