"""EU AI Act, Annex XI: technical documentation of a general-purpose AI model, item by item.

Section 1 applies to every provider of a general-purpose model; section 2 adds
items for models with systemic risk. Each item is filled from the run records
(or from what the user states in the card file) or marked missing — never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from lmforge.formatting import fmt
from lmforge.report.records import family, find_first, flatten


@dataclass(frozen=True)
class AnnexItem:
    ref: str
    title: str
    fill: Callable[[dict[str, Any]], str | None]  # the report context -> a value, or None when missing


def _stated(*keys: str) -> Callable[[dict[str, Any]], str | None]:
    def fill(ctx: dict[str, Any]) -> str | None:
        found = [f"{ctx['card'][k]}" for k in keys if ctx["card"].get(k)]
        return "; ".join(found) or None
    return fill


def _release(ctx: dict[str, Any]) -> str | None:
    parts = [f"released {ctx['card']['release_date']}" if ctx["card"].get("release_date") else "release date missing"]
    if ctx["card"].get("distribution"):
        parts.append(str(ctx["card"]["distribution"]))
    outputs = [s["result_path"] for s in ctx["compression"]["steps"] if s["result_path"] != "missing"]
    if outputs:
        parts.append("weights as safetensors folders: " + ", ".join(outputs))
    if any(r.command == "serve" for r in ctx["runs"]):
        parts.append("served through an OpenAI-compatible HTTP API (lmforge serve)")
    return "; ".join(parts) if len(parts) > 1 else None


def _architecture(ctx: dict[str, Any]) -> str | None:
    described = []
    for model in ctx["model"]["models"]:
        facts = model["facts"]
        bits = [str(facts[k]) for k in ("architecture", "model_type") if k in facts]
        if "parameters" in facts:
            bits.append(f"{fmt(facts['parameters'])} parameters")
        if "dtype" in facts:
            bits.append(f"weights in {facts['dtype']}")
        if "layers" in facts:
            bits.append(f"{facts['layers']} layers" + (f", hidden size {facts['hidden_size']}" if "hidden_size" in facts else ""))
        if bits:
            described.append(f"{model['label']}: " + ", ".join(bits))
    return "; ".join(described) or None


def _modality(ctx: dict[str, Any]) -> str | None:
    if not ctx["model"]["models"]:
        return None
    context = next((m["facts"]["context_length"] for m in ctx["model"]["models"] if "context_length" in m["facts"]), None)
    window = f", context of {fmt(context)} tokens" if context else ""
    return f"text in, text out (causal language model over a subword tokenizer{window})"


def _integration(ctx: dict[str, Any]) -> str | None:
    versions = {}
    for run in ctx["runs"]:
        versions.update({k: v for k, v in run.versions.items() if k in {"python", "torch", "transformers", "lmforge"}})
    if not versions:
        return None
    text = "loads with transformers' AutoModelForCausalLM (lmforge-compressed models: lmforge.models.load_model); " \
           "software used: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    hosts = sorted({run.host for run in ctx["runs"] if run.host})
    return text + (f"; hardware: {'; '.join(hosts)}" if hosts else "")


def _design(ctx: dict[str, Any]) -> str | None:
    parts = [f"{r.command}: " + ", ".join(f"{k}={v}" for k, v in r.config.items() if k not in {"output", "out"})
             for r in ctx["runs"] if family(r) == "training" and r.status == "ok"]
    parts += [f"{s['command']} of {s['base']}: {s['recipe']}" for s in ctx["compression"]["steps"]]
    if ctx["card"].get("design"):
        parts.insert(0, str(ctx["card"]["design"]))
    return "; ".join(parts) or None


def _data(ctx: dict[str, Any]) -> str | None:
    data = ctx["data"]
    parts = []
    if ctx["card"].get("training_data"):
        parts.append(f"training data (stated): {ctx['card']['training_data']}")
    if data["cards"]:
        parts.append(f"{len(data['cards'])} curation run(s) with a data card: " + ", ".join(c["run"] for c in data["cards"]))
    if data["trained_on"]:
        parts.append("trained on " + ", ".join(f"{t['name']}={t['path']}" + (f" (sha {t['hash'][:12]})" if t["hash"] else "")
                                               for t in data["trained_on"]))
    if data["evaluated_on"]:
        parts.append("tested on " + ", ".join(data["evaluated_on"]))
    return "; ".join(parts) or None


def _compute(ctx: dict[str, Any]) -> str | None:
    training = [r for r in ctx["runs"] if family(r) == "training" and r.status == "ok"]
    if not training:
        return ctx["card"].get("training_compute")
    parts = []
    for run in training:
        flops = find_first({**flatten(run.metrics), **flatten(run.energy)}, "flops", "train_flops")
        parts.append(f"{run.command} {run.id}: {fmt(run.seconds)} s on {run.host}"
                     + (f", {fmt(flops[1])} FLOPs" if flops else ""))
    return "; ".join(parts)


def _energy(ctx: dict[str, Any]) -> str | None:
    energy = ctx["energy"]
    if not energy["rows"] or not energy["totals"]["energy_kwh"]:
        return ctx["card"].get("energy")
    methods = sorted({row["method"] for row in energy["rows"] if row["method"] != "–"})
    return (f"{energy['shown']['energy_kwh']} kWh, {energy['shown']['co2_g']} g CO2eq over {len(energy['rows'])} "
            f"recorded step(s), measured by {', '.join(methods) or 'unknown method'}")


def _evaluations(ctx: dict[str, Any]) -> str | None:
    evaluation, bias = ctx["evaluation"], ctx["bias"]
    parts = []
    if evaluation["rows"]:
        parts.append(f"{len(evaluation['columns'])} model(s), {len(evaluation['rows'])} metrics (see Evaluation)")
    if bias["rows"]:
        parts.append(f"bias audit on {len({r['model'] for r in bias['rows']})} model(s) (see Bias)")
    return "; ".join(parts) or None


def _adversarial(ctx: dict[str, Any]) -> str | None:
    parts = []
    if ctx["robustness"]["rows"]:
        parts.append("robustness to input perturbations (see Robustness)")
    misuse = [r for r in ctx["runs"] if family(r) == "audit" and r.status == "ok"
              and any("misuse" in k for k in flatten(r.metrics))]
    if misuse:
        parts.append(f"misuse probes in {len(misuse)} audit run(s)")
    adapted = [f"{r.command} ({r.id})" for r in ctx["runs"]
               if r.command.split()[0] in {"finetune", "distill"} and r.status == "ok"]
    if adapted:
        parts.append("adaptations: " + ", ".join(adapted))
    return "; ".join(parts) or None


def _architecture_of_system(ctx: dict[str, Any]) -> str | None:
    parts = [f"{s['base']} → {s['command']} → {s['result']}" for s in ctx["compression"]["steps"]]
    if any(r.command == "serve" for r in ctx["runs"]):
        parts.append("lmforge serve with content filter, PII redaction, rate limits and usage log")
    return "; ".join(parts) or None


ANNEX_XI = [
    AnnexItem("1.1(a)", "Tasks the model is intended to perform; AI systems it can be integrated in",
              _stated("intended_use")),
    AnnexItem("1.1(b)", "Acceptable use policies", _stated("acceptable_use_policy")),
    AnnexItem("1.1(c)", "Date of release and methods of distribution", _release),
    AnnexItem("1.1(d)", "Architecture and number of parameters", _architecture),
    AnnexItem("1.1(e)", "Modality and format of inputs and outputs", _modality),
    AnnexItem("1.1(f)", "Licence", _stated("license")),
    AnnexItem("1.2(a)", "Technical means for integration (instructions, infrastructure, tools)", _integration),
    AnnexItem("1.2(b)", "Design specifications and training process, key design choices", _design),
    AnnexItem("1.2(c)", "Data for training, testing and validation: type, provenance, curation", _data),
    AnnexItem("1.2(d)", "Computational resources used to train the model (FLOPs, time)", _compute),
    AnnexItem("1.2(e)", "Known or estimated energy consumption", _energy),
    AnnexItem("2.1", "Evaluation strategies and results (systemic-risk models)", _evaluations),
    AnnexItem("2.2", "Adversarial testing and model adaptations (systemic-risk models)", _adversarial),
    AnnexItem("2.3", "System architecture: how the software components build on each other", _architecture_of_system),
]


def annex_xi(ctx: dict[str, Any]) -> list[dict[str, str]]:
    items = []
    for item in ANNEX_XI:
        value = item.fill(ctx)
        items.append({"ref": item.ref, "title": item.title, "value": value or "missing",
                      "status": "filled" if value else "missing"})
    return items
