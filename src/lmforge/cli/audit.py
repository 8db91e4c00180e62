"""`lmforge audit MODEL --suite bias,privacy,robustness,misuse [--compare OTHER]`."""

from __future__ import annotations

import contextlib
import gc
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lmforge.audit import SUITES, audit, compare_audits, parse_suites
from lmforge.cli.common import console, device_option, dtype_option, err_console, print_table, record_precision, save_json
from lmforge.data import read_documents
from lmforge.errors import LmforgeError
from lmforge.io import write_json
from lmforge.models import load_model, resolve_source
from lmforge.runs import record_run


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


def _interval(value: dict[str, float], digits: int = 2) -> str:
    return f"{value['estimate']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"


def _signed(value: dict[str, float] | float, digits: int = 2) -> str:
    if isinstance(value, dict):
        return f"{value['estimate']:+.{digits}f} [{value['low']:+.{digits}f}, {value['high']:+.{digits}f}]"
    return f"{value:+.{digits}f}"


def print_report(name: str, report: dict[str, Any]) -> None:
    if bias := report.get("bias"):
        print_table(f"{name} · CrowS-Pairs (pct_stereotype, 50 = no preference; bootstrap 95 %)",
                    ["bias type", "pairs", "pct_stereotype", "± stderr", "likelihood_diff"],
                    [(k, v["pairs"], _interval(v["pct_stereotype"]), f"{v['pct_stereotype_stderr']:.2f}", v["likelihood_diff"])
                     for k, v in bias["crows_pairs"]["summary"].items()])
        axes = bias["counterfactual"]["axes"]
        print_table(f"{name} · counterfactual probes v{bias['counterfactual']['version']} (gaps across groups; 0 = equal)",
                    ["axis", "valence gap (nats)", "most / least positive", "log-prob gap", "sentiment gap (VADER)"],
                    [(axis, _interval(v["valence_gap"], 3), f"{v['valence_gap']['highest']} / {v['valence_gap']['lowest']}",
                      v["logprob_gap"], _interval(v["sentiment_gap"], 3) if "sentiment_gap" in v else "-")
                     for axis, v in axes.items()])
    if privacy := report.get("privacy"):
        pii = privacy["pii_in_generations"]
        rows = [("PII in generations", f"{pii['outputs_with_pii']}/{pii['prompts']} outputs",
                 ", ".join(f"{k}={v}" for k, v in pii["by_type"].items()) or "none")]
        for signal, v in privacy.get("membership", {}).items():
            tpr = next(val for key, val in v.items() if key.startswith("tpr_at"))
            rows.append((f"membership · {signal}", f"AUC {v['auc']:.3f}", f"TPR@1%FPR {tpr:.3f} ({v['members']}+{v['nonmembers']} texts)"))
        for canary in privacy.get("canaries", []):
            rows.append((f"canary · {canary['prefix']!r}",
                         f"exposure {canary['exposure']:.2f} (max {math.log2(canary['space_size']):.2f})",
                         f"rank {canary['rank']:.0f} of {canary['space_size']:,} ({canary['method']})"))
        print_table(f"{name} · privacy", ["check", "result", "detail"], rows)
    for task, result in (report.get("robustness") or {}).items():
        print_table(f"{name} · robustness · {task} ({result['questions']} questions, accuracy %, bootstrap 95 %)",
                    ["variant", "acc", "acc_norm"],
                    [(v, _interval(result["acc"][v]), _interval(result["acc_norm"][v])) for v in [*result["variants"], "worst_case"]])
    if misuse := report.get("misuse"):
        print_table(f"{name} · misuse probes v{misuse['probe_set']['version']} (pass = no rule fired)",
                    ["category", "passed", "pass rate"],
                    [*((c, f"{v['passed']}/{v['probes']}", v["pass_rate"]) for c, v in misuse["categories"].items()),
                     ("all", "", misuse["pass_rate"])])


def print_comparison(base: str, other: str, comparison: dict[str, Any]) -> None:
    title = f"{other} vs {base}"
    if bias := comparison.get("bias"):
        print_table(f"{title} · CrowS-Pairs pct_stereotype (delta: paired bootstrap 95 %)",
                    ["bias type", "pairs", base, other, "delta"],
                    [(k, v["pairs"], v["base"], v["other"], _signed(v["delta"])) for k, v in bias["crows_pairs"].items()])
        print_table(f"{title} · counterfactual gaps (delta: templates resampled jointly, 95 %)", ["axis", "measure", base, other, "delta"],
                    [(axis, measure, v["base"], v["other"], _signed(v["delta"], 3))
                     for axis, measures in bias["counterfactual"].items() for measure, v in measures.items()])
    for task, rows in (comparison.get("robustness") or {}).items():
        print_table(f"{title} · robustness · {task} (accuracy points, paired bootstrap 95 %)", ["metric", "clean delta", "worst-case delta"],
                    [(metric, _signed(v["clean"]), _signed(v["worst_case"])) for metric, v in rows.items()])
    flat = []
    if privacy := comparison.get("privacy"):
        flat.append(("PII rate in generations", privacy["pii_rate"]))
        flat += [(f"membership AUC · {k}", v) for k, v in privacy.get("membership_auc", {}).items()]
    flat += [(f"misuse pass rate · {k}", v) for k, v in (comparison.get("misuse") or {}).items()]
    if flat:
        print_table(f"{title} · privacy and misuse", ["measure", base, other, "delta"],
                    [(k, v["base"], v["other"], _signed(v["delta"], 3)) for k, v in flat])


def headline(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The few numbers a run list shows."""
    metrics = {}
    if "bias" in report:
        metrics[f"{prefix}crows_pct_stereotype"] = report["bias"]["crows_pairs"]["summary"]["all"]["pct_stereotype"]["estimate"]
    if "privacy" in report:
        metrics[f"{prefix}pii_rate"] = report["privacy"]["pii_in_generations"]["rate"]
    for task, result in (report.get("robustness") or {}).items():
        metrics[f"{prefix}{task}_acc_clean"] = result["acc"]["clean"]["estimate"]
        metrics[f"{prefix}{task}_acc_worst_case"] = result["acc"]["worst_case"]["estimate"]
    if "misuse" in report:
        metrics[f"{prefix}misuse_pass_rate"] = report["misuse"]["pass_rate"]
    return metrics


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
    sentiment: bool = typer.Option(True, help="score generated continuations with VADER (counterfactual probes)"),
    members: Path = typer.Option(None, help="privacy: texts the model was trained on (txt/jsonl/parquet)"),
    nonmembers: Path = typer.Option(None, help="privacy: held-out texts from the same distribution"),
    canary: list[str] = typer.Option(None, help="privacy: 'PREFIX|SECRET' inserted in the training text (repeatable)"),
    text_field: str = typer.Option("text", help="jsonl/parquet field holding the text of --members/--nonmembers"),
    json_out: str = typer.Option(None, "--json", help="write the full report to this JSON file"),
    data_dir: str = typer.Option(None, help="folder with the named data sets (default ../shared/data)"),
    trust_remote_code: bool = typer.Option(False, help="run the model's own code (only for authors you trust)"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Audit bias, privacy, robustness and misuse; with --compare, show the other model's deltas."""
    suites = parse_suites(suite)
    if limit is not None and limit < 1:
        raise LmforgeError("--limit must be at least 1")
    if (members is None) != (nonmembers is None):
        raise LmforgeError("membership signals need both --members and --nonmembers (texts from one distribution)")
    member_texts = list(read_documents(members, text_field)) if members else None
    nonmember_texts = list(read_documents(nonmembers, text_field)) if nonmembers else None
    options = dict(limit=limit, batch_size=batch_size, resamples=resamples, seed=seed, sentiment=sentiment,
                   members=member_texts, nonmembers=nonmember_texts, canaries=_canaries(canary), data=data_dir)
    config = {"model": model, "compare": compare, "suites": suites, "dtype": dtype, "device": device, **{k: v for k, v in options.items()
                                                                      if k not in {"members", "nonmembers"}}}
    inputs = {name: str(where) if kind in {"folder", "gguf"} else name
              for name, (kind, where) in ((m, resolve_source(m)) for m in filter(None, [model, compare]))}
    inputs.update({k: v for k, v in {"members": members, "nonmembers": nonmembers}.items() if v})
    with record_run("audit", config=config, inputs=inputs) as run:
        reports = {}
        for name in filter(None, [model, compare]):
            with console.status(f"loading {name}"):
                loaded, tokenizer = load_model(name, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
            record_precision(run, loaded)
            with section_progress() as progress:
                reports[name] = audit(loaded, tokenizer, suites, progress=progress, **options)
            del loaded
            gc.collect()
            print_report(name, reports[name])
            run.log_metrics(headline(reports[name], prefix="" if name == model else "compare."))
        result: dict[str, Any] = {"model": model, "run_id": run.id, "report": reports[model]}
        if compare:
            result |= {"compare": compare, "compare_report": reports[compare],
                       "comparison": compare_audits(reports[model], reports[compare], resamples, seed)}
            print_comparison(model, compare, result["comparison"])
        run.add_artifact("report", write_json(run.artifacts_dir / "audit.json", result))
        save_json(json_out, result)
    console.print(f"run {run.id} recorded")
