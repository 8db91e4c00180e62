"""Shared CLI pieces: console, tables, JSON output, progress, one-line errors."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text  # noqa: F401  (re-exported: styled CLI output)

from lmforge.errors import check_at_least, check_fraction  # noqa: F401  (re-exported: option checks)
from lmforge.formatting import fmt, human_bytes  # noqa: F401  (re-exported for the CLI modules)
from lmforge.io import check_output_file, check_outputs, write_json  # noqa: F401  (re-exported: output checks before any work)

# Markup off: messages carry paths, model names and install hints such as `pip install 'lmforge[audit]'`, and rich
# would read their brackets as style tags and drop them. Styled output passes style= or a rich Text instead.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def print_error(message: str) -> None:
    """The one-line error every command ends with on bad input: the message exactly as written."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], values_justify: str = "right") -> Table:
    result = Table(title=title, title_justify="left", header_style="bold")
    for i, column in enumerate(columns):
        result.add_column(column, justify="left" if i == 0 else values_justify, no_wrap=i == 0)
    for row in rows:
        result.add_row(*(cell if isinstance(cell, Text) else fmt(cell) for cell in row))
    return result


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], values_justify: str = "right") -> None:
    console.print(table(title, columns, rows, values_justify))


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    """A two-column field/value table; nested dicts print as `key=value` lists."""
    rows = [(key, ", ".join(f"{k}={fmt(v)}" for k, v in value.items()) if isinstance(value, dict) else value)
            for key, value in mapping.items()]
    print_table(title, ["field", "value"], rows, values_justify="left")


def save_json(path: str | Path | None, data: Any) -> None:
    """Write the results; if that fails at the end, keep them beside the run (stdout) and exit 1 in one line."""
    if not path:
        return
    try:
        write_json(path, data)
    except OSError as exc:
        console.print_json(data=data, default=str)
        print_error(f"could not write {path} ({exc.strerror or exc}); the results are printed above")
        raise SystemExit(1) from None
    console.print(f"wrote {path}")


def overwrite_option():
    """``--overwrite``, the same on every command that writes a folder."""
    import typer

    return typer.Option(False, "--overwrite", help="replace an existing lmforge output of the same kind at -o "
                                                   "(a folder lmforge did not write is never replaced)")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator:
    """A rich progress bar on stderr; yields ``advance(n=1)``, whose ``set_total(n)`` fixes the total later."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err_console, transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        advance.set_total = lambda n: progress.update(task, total=n)  # type: ignore[attr-defined]
        yield advance


def energy_rows(energy: dict) -> list[tuple[str, object]]:
    if energy.get("method") == "unavailable":
        return [("energy", f"unavailable ({energy.get('reason')})")]
    return [("energy (kWh)", energy.get("energy_kwh")), ("CO2 (kg)", energy.get("co2_kg")),
            ("energy measured by", f"{energy.get('method')}, {energy.get('country')}")]


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def dtype_option():
    """``--dtype``, the same on every command that loads a model."""
    import typer

    return typer.Option("float32", "--dtype", help="weights in: auto (the checkpoint's own dtype) | float32 | bfloat16 | float16")


def device_option():
    """``--device``, the same on every command that loads a model."""
    import typer

    return typer.Option("auto", "--device", help="run on: auto (cuda when a GPU is visible) | cpu | cuda")


def record_precision(run, model) -> None:
    """Record the dtype and device the model really ran in (a run's numbers depend on both)."""
    from lmforge.models import precision

    run.log_metrics({f"model.{key}": value for key, value in precision(model).items()})
