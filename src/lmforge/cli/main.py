"""Entry point: `lmforge` with one sub-app or command group per package."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from lmforge.errors import LmforgeError

app = typer.Typer(
    name="lmforge",
    help="Curate, train, compress, evaluate, audit, document and serve small language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines `register(app)`; keep one line per module.
COMMAND_MODULES = [
    "lmforge.cli.models",
    "lmforge.cli.compress",
    "lmforge.cli.prune",
    "lmforge.cli.distill",
    "lmforge.cli.optimize",
    "lmforge.cli.evaluate",
    "lmforge.cli.runs",
    "lmforge.cli.quickstart",
    "lmforge.cli.data",
    "lmforge.cli.report",
    "lmforge.cli.serve",
    "lmforge.cli.train",
    "lmforge.cli.finetune",
    "lmforge.cli.align",
    "lmforge.cli.scale",
    "lmforge.cli.audit",
    "lmforge.cli.explain",
    "lmforge.cli.export",
]

for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except LmforgeError as exc:
        from lmforge.cli.common import print_error

        print_error(str(exc))
        sys.exit(2)
    except OSError as exc:  # a disk that fills or a folder that turns read-only mid-run: one line, not a traceback
        from lmforge.cli.common import print_error

        where = f" {exc.filename}" if exc.filename else ""
        print_error(f"could not write or read{where}: {exc.strerror or exc}; free space or fix permissions and rerun")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
