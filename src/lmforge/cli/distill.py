"""`lmforge distill STUDENT --teacher TEACHER -o OUT`: recover a pruned model's quality from its teacher."""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.cli.common import check_at_least, check_outputs, console, fmt, overwrite_option, print_table, progress_bar, save_json
from lmforge.errors import LmforgeError
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)


def distill_command(
    student: str = typer.Argument(..., help="student model (e.g. a pruned folder)"),
    teacher: str = typer.Option(..., help="teacher model with the same tokenizer"),
    out: Path = typer.Option(..., "-o", "--out", help="folder for the trained student"),
    corpus: str = typer.Option("web_articles", help="training text (named set or path)"),
    steps: int = typer.Option(200), batch_size: int = typer.Option(4), seq_len: int = typer.Option(256),
    lr: float = typer.Option(1e-4), temperature: float = typer.Option(2.0),
    ce_weight: float = typer.Option(0.0, help="weight of the cross-entropy on true tokens"),
    hidden_weight: float = typer.Option(0.0, help="weight of the hidden-state MSE"),
    max_minutes: float = typer.Option(None, help="stop after this much training time"),
    json_out: Path = typer.Option(None, "--json"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Distill a teacher into a student (KL at temperature T; optional hidden-state loss); pruned zeros stay zero."""
    from lmforge.models import model_input
    from lmforge.train.distill import DistillConfig
    from lmforge.workflows.prune import distill_model

    check_at_least(1, steps=steps, batch_size=batch_size, seq_len=seq_len)
    check_at_least(0, ce_weight=ce_weight, hidden_weight=hidden_weight)
    if lr <= 0 or temperature <= 0 or (max_minutes is not None and max_minutes <= 0):
        raise LmforgeError("--lr, --temperature and --max-minutes must be above 0")
    check_outputs(out, "model", overwrite, files=[json_out], inputs=[student, teacher])
    config = DistillConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, temperature=temperature,
                           ce_weight=ce_weight, hidden_weight=hidden_weight,
                           max_seconds=max_minutes * 60 if max_minutes else None)
    with record_run("distill", config=vars(config), inputs={"student": model_input(student), "teacher": model_input(teacher),
                                                          "corpus": corpus}) as run:
        with progress_bar("distilling", total=steps) as advance:
            result = distill_model(student, teacher, corpus, config, out, progress=advance,
                                   log=lambda p: console.print(f"step {p['step']}: loss {fmt(p['loss'])}"))
        run.add_artifact("model", out)
        run.log_metrics({"steps": result.steps, "seconds": result.seconds, "tokens": result.tokens,
                         "final_loss": result.curve[-1]["loss"]})
    print_table("distillation", ["step", "seconds", "loss"], [(p["step"], p["seconds"], p["loss"]) for p in result.curve])
    save_json(json_out, result.to_dict())
