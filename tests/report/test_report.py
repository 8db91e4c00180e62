"""The report: every section and every Annex XI item present, values traced to the records, README metadata."""

from html.parser import HTMLParser

import pytest
import yaml

from lmforge.errors import LmforgeError
from lmforge.report import ANNEX_XI, SECTIONS, build_report
from lmforge.report.plots import pareto_front
from lmforge.runs import RunStore

CARD = {"model_name": "SmolLM2-135M GPTQ int4", "license": "Apache-2.0",
        "intended_use": "Research on compressing small English language models."}


class Outline(HTMLParser):
    """Section ids, Annex XI rows (status + text of the last cell), image sources and scripts of a page."""

    def __init__(self):
        super().__init__()
        self.sections, self.annex, self.images, self.scripts = [], [], [], 0
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "tr" and "annex-item" in (attrs.get("class") or ""):
            self._row = {"status": attrs["data-status"], "cells": []}
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag in {"script", "link"}:
            self.scripts += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.annex.append(self._row)
            self._row = None


def outline(path):
    parser = Outline()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_section_and_every_annex_item_is_present_with_a_value_or_missing(store, tmp_path):
    out = build_report(store, out=tmp_path / "site" / "report.html", card=CARD)
    page = outline(out)
    assert page.sections == [anchor for anchor, _ in SECTIONS]
    assert [row["cells"][0] for row in page.annex] == [item.ref for item in ANNEX_XI]
    for row in page.annex:
        value = row["cells"][-1]
        assert value and (value == "missing") == (row["status"] == "missing"), row
    by_ref = {row["cells"][0]: row for row in page.annex}
    # Filled from the card, from the records, or missing because nothing recorded them.
    assert by_ref["1.1(f)"]["cells"][-1] == "Apache-2.0"
    assert "134,515,008 parameters" in by_ref["1.1(d)"]["cells"][-1]
    assert by_ref["1.1(b)"]["status"] == "missing"  # no acceptable-use policy stated
    assert by_ref["1.2(d)"]["status"] == "missing"  # no training run recorded
    assert "0.0197 kWh" in by_ref["1.2(e)"]["cells"][-1]  # 0.0021 + 0.0094 + 0.0011 + 0.004 + 0.0031
    # Self-contained: every figure inline, nothing fetched, no script.
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.scripts == 0 and "http://" not in out.read_text() and "https://" not in out.read_text()


def test_an_empty_store_still_renders_every_section_saying_no_records(tmp_path):
    out = build_report(RunStore(tmp_path / "runs.sqlite"), out=tmp_path / "report.html", model_card_path=None)
    page = outline(out)
    assert page.sections == [anchor for anchor, _ in SECTIONS]
    assert all(row["status"] == "missing" and row["cells"][-1] == "missing" for row in page.annex)
    assert len(page.annex) == len(ANNEX_XI)
    html = out.read_text()
    assert html.count("No records") >= 8 and not (tmp_path / "README.md").exists()


def test_sections_show_what_the_records_hold(store, tmp_path):
    html = build_report(store, out=tmp_path / "report.html", card=CARD).read_text()
    for expected in ("religion", "61.9 – 79.1",  # bias type with its interval (70.5 ± 8.6), from audit.json
                     "60.4 – 77.6",  # the compared base model's (69.0 ± 8.6)
                     "worst_case", "42 – 56",  # robustness worst case with its interval
                     "method=gptq, bits=4, group_size=64", "+12.9%", "-77.5%",  # lineage: recipe, ppl and size change
                     "smollm2-135m · gptq int4 g64", "smollm2-135m · wanda 50%",  # derived models named by recipe
                     "documents_out", "164",  # the data run's counts
                     "Data card: web_articles",  # its own card, embedded
                     "misuse_pass_rate",  # a metric no section knows, shown in the run list
                     "… (2,800 characters)"):  # a per-example list, clipped
        assert expected in html, expected


def test_readme_model_card_has_hf_metadata_from_the_records(store, tmp_path):
    build_report(store, out=tmp_path / "report.html", card=CARD)
    text = (tmp_path / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    co2_grams = (0.0021 + 0.0094 + 0.0011 + 0.004 + 0.0031) * 0.056 * 1000
    assert meta["co2_eq_emissions"]["emissions"] == pytest.approx(co2_grams, rel=1e-3)
    assert meta["co2_eq_emissions"]["geographical_location"] == "FRA"
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "text-generation"
    results = {(r["dataset"]["name"], r["metrics"][0]["type"], r["metrics"][0]["value"])
               for r in meta["model-index"][0]["results"]}
    assert ("wikitext2", "ppl", 21.895) in results and ("arc_easy", "acc", 0.5707) in results
    assert sorted(meta["datasets"]) == ["arc_easy", "wikitext2"]
    # Rebuilding replaces our own README; someone else's is never overwritten.
    build_report(store, out=tmp_path / "report.html", card=CARD)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.md").write_text("# my project\n")
    with pytest.raises(LmforgeError, match="--model-card"):
        build_report(store, out=tmp_path / "other" / "report.html")
    assert (tmp_path / "other" / "README.md").read_text() == "# my project\n"


def test_run_selection_by_prefix_command_and_latest(store, tmp_path):
    runs = store.list(limit=None)
    eval_ids = [r.id for r in runs if r.command == "eval"]
    html = build_report(store, run_ids=["eval"], out=tmp_path / "r.html", model_card_path=None).read_text()
    assert all(run_id in html for run_id in eval_ids) and "audit" not in html.split('id="runs"')[1]
    with pytest.raises(LmforgeError, match="no run"):
        build_report(store, run_ids=["nope"], out=tmp_path / "r.html", model_card_path=None)


def test_pareto_front_matches_brute_force():
    import random

    rng = random.Random(0)
    for _ in range(50):
        points = [(rng.uniform(0, 10), rng.uniform(0, 10)) for _ in range(12)]
        dominated = {i for i, p in enumerate(points) for q in points if q != p and q[0] <= p[0] and q[1] <= p[1]}
        assert set(pareto_front(points)) == set(range(len(points))) - dominated


def test_card_file_example_loads_and_unknown_fields_are_named(tmp_path):
    from importlib.resources import files

    from lmforge.report import load_card

    example = load_card(files("lmforge.report") / "templates" / "card.example.yaml")
    assert example["license"] == "Apache-2.0" and example["language"] == ["en"]
    typo = tmp_path / "card.yaml"
    typo.write_text("licence: MIT\n")
    with pytest.raises(LmforgeError, match="licence"):
        load_card(typo)


def test_training_runs_fill_compute_design_and_data_items(tmp_path):
    from lmforge.report import report_context
    from lmforge.runs import record_run

    store = RunStore(tmp_path / "runs.sqlite")
    with record_run("train", config={"preset": "tiny-1m", "lr": 3e-3, "steps": 20}, inputs={"corpus": "wikitext2"},
                    store=store, measure_energy=False) as run:
        run.log_metrics({"params": 836448, "tokens": 20480, "train_flops": 1.1486e11, "final_eval_loss": 7.35})
        run.log_energy({"energy_kwh": 6.6e-05, "co2_kg": 2.4e-05, "method": "TDP estimate", "country": "USA"})
        run.add_artifact("model", tmp_path)
    ctx = report_context(store.list(limit=None))
    annex = {item["ref"]: item for item in ctx["annex"]}
    assert "1.149e+11 FLOPs" in annex["1.2(d)"]["value"]
    assert "preset=tiny-1m" in annex["1.2(b)"]["value"]
    assert annex["1.2(c)"]["value"] == "trained on corpus=wikitext2"
    assert annex["1.1(d)"]["value"].endswith("836,448 parameters")
    assert ("final_eval_loss", "7.35") in ctx["data"]["training"][0]["metrics"]


def _quickstart_store(tmp_path):
    """The runs the quickstart leaves, recorded as typed results (compress, prune, two evals of the pruned model,
    an audit of base vs int4), the way the workflows record them."""
    from lmforge.runs import AuditResult, CompressionResult, EvalResult, ModelRef, PruningResult, record_run

    def model(name, digest, dtype, params=134515008):
        return ModelRef(name=name, path=str(tmp_path / name), hash=f"sha256:{digest}", architecture="LlamaForCausalLM",
                        model_type="llama", parameters=params, dtype=dtype, layers=30, hidden_size=576,
                        context_length=8192, vocab_size=49152)

    base = ModelRef(**{**vars(model("smollm2-135m", "b", "float32")), "path": str(tmp_path / "zoo")})
    int4, pruned = model("quickstart/int4", "q", "int32"), model("quickstart/wanda", "w", "float32")
    results = [
        ("compress", CompressionResult(
            base=base, output=int4, recipe={"method": "gptq", "bits": 4, "group_size": 64},
            base_metrics={"wikitext2.ppl": 21.9, "arc_easy.acc": 0.58, "speed.decode_tokens_per_s": 17.0,
                          "model_bytes": 538e6},
            output_metrics={"wikitext2.ppl": 24.1, "arc_easy.acc": 0.57, "speed.decode_tokens_per_s": 40.0,
                            "model_bytes": 160e6, "disk_bytes": 121e6},
            cost={"compress_seconds": 60.0})),
        ("prune", PruningResult(base=base, output=pruned, recipe={"method": "wanda", "sparsity": 0.5},
                                details={"sparsity": 0.5})),
        ("eval", EvalResult(pruned, {"wikitext2": {"ppl": 70.2}, "speed": {"decode_tokens_per_s": 15.0,
                                                                             "model_bytes": 538e6}})),
        ("eval", EvalResult(pruned, {"arc_easy": {"acc": 0.45}})),
        ("audit", AuditResult(base, ["bias"], {"crows_pct_stereotype": 56.0}, compare=int4,
                              compare_scores={"crows_pct_stereotype": 57.5})),
    ]
    store = RunStore(tmp_path / "runs.sqlite")
    for command, result in results:
        with record_run(command, store=store, measure_energy=False) as run:
            run.log_result(result)
    return store, results


def test_the_quickstart_evaluation_has_one_column_per_model_with_every_metric_measured_for_it(tmp_path):
    from lmforge.report import report_context

    store, results = _quickstart_store(tmp_path)
    assert [r.result for r in store.list(limit=None)[::-1]] == [result for _, result in results]  # read back by field
    ctx = report_context(store.list(limit=None))
    evaluation = ctx["evaluation"]
    assert [c["label"] for c in evaluation["columns"]] == [
        "smollm2-135m", "smollm2-135m · gptq int4 g64", "smollm2-135m · wanda 50%"]
    rows = {r["metric"]: r["raw"] for r in evaluation["rows"]}
    assert rows["wikitext2.ppl"] == [21.9, 24.1, 70.2]  # base and int4 from the compress run, pruned from an eval
    assert rows["arc_easy.acc"] == [0.58, 0.57, 0.45]  # the pruned model's second eval run lands in its column
    assert rows["speed.decode_tokens_per_s"] == [17.0, 40.0, 15.0]
    assert rows["crows_pct_stereotype"] == [56.0, 57.5, None]  # the audit's scores, by model
    assert rows["model_bytes"] == [538e6, 160e6, 538e6] and "compress_seconds" not in rows  # a cost, not a score
    assert {r["metric"]: r["best"] for r in evaluation["rows"]}["wikitext2.ppl"] == 0
    assert sorted((p["label"], p["size_mb"]) for p in evaluation["points"]) == [
        ("smollm2-135m", 538.0), ("smollm2-135m · gptq int4 g64", 121.0), ("smollm2-135m · wanda 50%", 538.0)]
    annex = {item["ref"]: item for item in ctx["annex"]}
    architecture = annex["1.1(d)"]["value"]
    for label, dtype in (("smollm2-135m", "float32"), ("smollm2-135m · gptq int4 g64", "int32"),
                         ("smollm2-135m · wanda 50%", "float32")):
        assert f"{label}: LlamaForCausalLM, llama, 134,515,008 parameters, weights in {dtype}, 30 layers" in architecture
    assert "context of 8,192 tokens" in annex["1.1(e)"]["value"]
    filled = {ref for ref, item in annex.items() if item["status"] == "filled"}
    assert filled >= {"1.1(c)", "1.1(d)", "1.1(e)", "1.2(a)", "1.2(b)", "1.2(c)", "2.1", "2.3"}
    steps = {s["result"]: s for s in ctx["compression"]["steps"]}
    assert steps["smollm2-135m · gptq int4 g64"]["base_hash"] == "sha256:b"
    assert [h["change"] for h in steps["smollm2-135m · gptq int4 g64"]["headline"]] == [
        "+10.0%", "-1.7%", "+135.3%", "", "-70.3%"]  # ppl, acc, tok/s, disk (base's unknown), RAM


def test_the_quickstart_recorded_the_old_way_also_reads_as_one_column_per_model(tmp_path):
    """Today's CLI records flat metrics; each run gets its typed result from them, and the table is the same shape."""
    from lmforge.report import report_context
    from lmforge.runs import record_run

    int4, wanda = tmp_path / "smollm2-gptq-int4-g64", tmp_path / "smollm2-wanda50"
    for folder in (int4, wanda):
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 30, '
                                            f'"_name_or_path": "{folder.name}"}}')
    store = RunStore(tmp_path / "runs.sqlite")
    calls = [
        ("compress", {"model": "smollm2-135m", "method": "gptq", "bits": 4, "group_size": 64},
         {"model": "smollm2-135m"}, {"baseline.wikitext2_ppl": 21.9, "baseline.arc_easy_acc": 0.58,
                                     "quantized.wikitext2_ppl": 24.1, "quantized.arc_easy_acc": 0.57}, int4),
        ("prune", {"method": "wanda", "sparsity": 0.5}, {"model": "smollm2-135m"}, {"sparsity": 0.5}, wanda),
        ("eval", {"model": str(wanda)}, {"model": str(wanda)}, {"wikitext2.ppl": 70.2, "speed.model_bytes": 538e6}, None),
        ("eval", {"model": str(wanda)}, {"model": str(wanda)}, {"arc_easy.acc": 0.45}, None),
        ("audit", {"model": "smollm2-135m", "compare": str(int4), "suites": ["bias"]},
         {"smollm2-135m": "smollm2-135m", str(int4): str(int4)},
         {"crows_pct_stereotype": 56.0, "compare.crows_pct_stereotype": 57.5}, None),
    ]
    for command, config, inputs, metrics, made in calls:
        with record_run(command, config=config, inputs=inputs, store=store, measure_energy=False) as run:
            run.log_metrics(metrics)
            if made:
                run.add_artifact("model", made)
    ctx = report_context(store.list(limit=None))
    assert [c["label"] for c in ctx["evaluation"]["columns"]] == [
        "smollm2-135m", "smollm2-135m · gptq int4 g64", "smollm2-135m · wanda 50%"]
    rows = {r["metric"]: r["raw"] for r in ctx["evaluation"]["rows"]}
    assert rows["wikitext2.ppl"] == [21.9, 24.1, 70.2] and rows["arc_easy.acc"] == [0.58, 0.57, 0.45]
    assert rows["crows_pct_stereotype"] == [56.0, 57.5, None]
    assert "smollm2-135m · gptq int4 g64: LlamaForCausalLM, 30 layers" in {
        item["ref"]: item for item in ctx["annex"]}["1.1(d)"]["value"]


def test_odd_records_do_not_break_the_report(tmp_path):
    from lmforge.runs import record_run

    store = RunStore(tmp_path / "runs.sqlite")
    with record_run("eval", config={"model": None}, inputs={"model": {"unexpected": 1}}, store=store,
                    measure_energy=False) as run:
        run.log_metrics({"none": None, "nan.ppl": float("nan"), "inf_acc": float("inf"), "flag": True,
                         "list": [1, 2], "nested": {"text": "<script>alert(1)</script>"}, "ok.acc": 0.5})
        run.log_energy({"method": "unavailable", "reason": "no RAPL"})
    with pytest.raises(RuntimeError), record_run("compress", config={"method": "gptq"}, store=store,
                                                 measure_energy=False):
        raise RuntimeError("out of memory")
    html = build_report(store, out=tmp_path / "report.html", model_card_path=tmp_path / "card.md").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html  # recorded text is escaped
    assert "RuntimeError: out of memory" in html  # the failed run is listed with its error
    page = outline(tmp_path / "report.html")
    assert page.sections == [anchor for anchor, _ in SECTIONS] and page.scripts == 0
    assert (tmp_path / "card.md").read_text().startswith("---\n")


def test_the_quickstart_card_is_a_valid_card_that_names_the_model_really_used(tmp_path):
    from lmforge.cli.quickstart import quickstart_card
    from lmforge.report import load_card, report_context
    from lmforge.runs import record_run

    path = tmp_path / "card.yaml"
    path.write_text(quickstart_card("smollm2-135m"))
    assert load_card(path)["base_model"] == "HuggingFaceTB/SmolLM2-135M" and "Instruct" not in path.read_text()
    path.write_text(quickstart_card("smollm2-135m-instruct-q4_1"))
    card = load_card(path)
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "intended_use" not in card
    assert "GGUF Q4_1" in card["model_name"] and "smollm2-135m-instruct-q4_1" in card["model_name"]
    store = RunStore(tmp_path / "runs.sqlite")
    with record_run("compress", config={"model": "smollm2-135m"}, inputs={"model": "smollm2-135m"},
                    store=store, measure_energy=False) as run:
        run.log_metrics({"baseline.wikitext2_ppl": 24.5, "quantized.wikitext2_ppl": 30.2})
    ctx = report_context(store.list(limit=None), card)
    assert ctx["model"]["name"] == card["model_name"]
