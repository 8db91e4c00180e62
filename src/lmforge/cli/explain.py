"""`lmforge explain MODEL "text" --target " token"`."""

from __future__ import annotations

import typer

from lmforge.cli.common import check_at_least, check_outputs, console, device_option, dtype_option, print_table, record_precision, save_json
from lmforge.errors import LmforgeError
from lmforge.explain import METHODS, explain, render_html
from lmforge.explain.attributions import BASELINES
from lmforge.io import atomic_path, write_json
from lmforge.models import load_model, model_input
from lmforge.runs import record_run


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)


def explain_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    text: str = typer.Argument(..., help="the prompt, e.g. \"The capital of France is\""),
    target: str = typer.Option(..., help="the continuation to explain, with its leading space: \" Paris\""),
    method: str = typer.Option(",".join(METHODS), help=f"comma-separated attribution methods: {', '.join(METHODS)}"),
    steps: int = typer.Option(64, help="integrated gradients: quadrature points on the path"),
    baseline: str = typer.Option("eos", help=f"integrated gradients: baseline embeddings ({' | '.join(BASELINES)})"),
    top_k: int = typer.Option(5, help="logit lens: top tokens kept per layer and position"),
    attention: bool = typer.Option(True, help="also record every layer's and head's attention map"),
    html: str = typer.Option(None, help="write the self-contained HTML view here"),
    json_out: str = typer.Option(None, "--json", help="write the explanation as JSON here"),
    trust_remote_code: bool = typer.Option(False, help="run the model's own code (only for authors you trust)"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Why does MODEL continue TEXT with TARGET? Attributions, logit lens and attention, as tables, JSON and HTML."""
    methods = tuple(m.strip() for m in method.split(",") if m.strip())
    if not methods or (unknown := [m for m in methods if m not in METHODS]):
        raise LmforgeError(f"unknown --method {', '.join(unknown) if methods else '(none)'}; use {', '.join(METHODS)}")
    check_at_least(1, steps=steps, top_k=top_k)
    check_outputs(files=[html, json_out])
    config = {"model": model, "text": text, "target": target, "methods": methods, "steps": steps, "baseline": baseline,
              "top_k": top_k, "attention": attention, "dtype": dtype, "device": device}
    with record_run("explain", config=config, inputs={"model": model_input(model)}) as run:
        with console.status(f"loading {model}"):
            loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
        record_precision(run, loaded)
        with console.status("explaining"):
            report = explain(loaded, tokenizer, text, target, methods, steps=steps, baseline=baseline, top_k=top_k,
                             attention=attention)
        attributions = report["attributions"]
        print_table(f"{model} · attributions to log p({target!r} | text)", ["token", *(a["method"] for a in attributions)],
                    [(repr(token), *(a["scores"][i] for a in attributions)) for i, token in enumerate(attributions[0]["tokens"])])
        for a in attributions:
            if a["completeness_gap"] is not None:
                console.print(f"{a['method']}: sum {sum(a['scores']):.4f} vs f(x) - f(baseline) "
                              f"{a['target_logprob'] - a['baseline_logprob']:.4f} (completeness gap {100 * a['completeness_gap']:.2f} %)")
        lens = report["logit_lens"]
        print_table(f"{model} · logit lens at the last position", ["layer", "top token", "p", f"p({target!r})", "rank"],
                    [(layer, repr(lens["top_tokens"][i][-1][0]), lens["top_probs"][i][-1][0], lens["target_prob"][i],
                      lens["target_rank"][i]) for i, layer in enumerate(lens["layers"])])
        page = render_html(report, title=f"{model}: {text!r} → {target!r}")
        with atomic_path(run.artifacts_dir / "explain.html") as tmp:
            tmp.write_text(page, encoding="utf-8")
        run.add_artifact("html", run.artifacts_dir / "explain.html")
        run.add_artifact("json", write_json(run.artifacts_dir / "explain.json", report))
        run.log_metrics({f"{a['method']}.target_logprob": a["target_logprob"] for a in attributions}
                        | {f"{a['method']}.completeness_gap": a["completeness_gap"] for a in attributions if a["completeness_gap"] is not None})
        if html:
            with atomic_path(html) as tmp:
                tmp.write_text(page, encoding="utf-8")
            console.print(f"wrote {html}")
        save_json(json_out, report)
    console.print(f"run {run.id} recorded")
