"""Typed results: described from a real model, stored with a schema version, read back equal; old stores migrate."""

import copy
import json
import sqlite3

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.runs import (
    SCHEMA_VERSION, AuditResult, CompressionResult, CurationResult, DataRef, EvalResult, ModelRef, PruningResult,
    RunStore, TrainingResult, content_hash, record_run, result_from_dict,
)

BASE = ModelRef(name="smollm2-135m", path="/zoo/smollm2", hash="sha256:aa", architecture="LlamaForCausalLM",
                parameters=134515008, dtype="float32")
OUT = ModelRef(name="out/int4", path="/work/out/int4", hash="sha256:bb", parameters=134515008, dtype="int32")

ONE_OF_EACH = [
    EvalResult(BASE, {"wikitext2": {"ppl": 21.9, "tokens": 8192.0}, "arc_easy": {"acc": 0.58}},
               settings={"protocol": "windows", "seqlen": 2048}, data={"wikitext2": DataRef("wikitext2", "/d/w", "sha256:d")}),
    CompressionResult(BASE, OUT, recipe={"method": "gptq", "bits": 4, "group_size": 64},
                      base_metrics={"wikitext2.ppl": 21.9}, output_metrics={"wikitext2.ppl": 24.1},
                      cost={"compress_seconds": 61.0}, details={"skipped": {"lm_head": "pattern"}},
                      calibration=DataRef("web_articles", "/d/web", "sha256:c"), exports={"gguf": "/work/out/m.gguf"}),
    PruningResult(BASE, OUT, recipe={"method": "wanda", "sparsity": 0.5}, details={"sparsity": 0.5}),
    TrainingResult(OUT, base=BASE, data={"corpus": DataRef("wikitext2")}, settings={"lr": 3e-3},
                   final={"final_eval_loss": 7.3}, steps=TrainingResult.loss_curve([8.0, 7.5, 7.2], [(2, 7.6), (3, 7.3)])),
    AuditResult(OUT, ["bias"], {"crows_pct_stereotype": 56.2}, compare=BASE, compare_scores={"crows_pct_stereotype": 54.7},
                report="/work/audit.json"),
    CurationResult(DataRef("web.yaml", "/p/web.yaml", "sha256:p"), DataRef("curated", "/c"), 181, 164,
                   {"dedup": 9, "quality": 8}, card="/c/card.html"),
]


@pytest.mark.parametrize("result", ONE_OF_EACH, ids=lambda r: r.kind)
def test_each_family_round_trips_through_the_store_by_field(result, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    with record_run(result.kind, store=store, measure_energy=False) as run:
        run.log_result(result)
    record = store.get(run.id)
    assert record.result == result and type(record.result) is type(result)
    assert record.schema_version == SCHEMA_VERSION
    assert record.metrics == result.metrics() and all(record.inputs[k] == v for k, v in result.inputs().items())
    row = sqlite3.connect(store.path).execute("SELECT schema_version, result FROM runs").fetchone()
    assert row[0] == SCHEMA_VERSION and json.loads(row[1])["kind"] == result.kind


def test_results_say_what_they_are_about():
    compress, prune, train, audit = ONE_OF_EACH[1], ONE_OF_EACH[2], ONE_OF_EACH[3], ONE_OF_EACH[4]
    assert compress.metrics() == {"wikitext2.ppl": 24.1, "base.wikitext2.ppl": 21.9, "compress_seconds": 61.0}
    assert compress.inputs()["calibration"]["hash"] == "sha256:c" and compress.outputs()["gguf"] == "/work/out/m.gguf"
    assert prune.kind == "prune" and prune.outputs() == {"model": "/work/out/int4"}
    assert train.history() == [{"step": 1, "train_loss": 8.0}, {"step": 2, "train_loss": 7.5, "eval_loss": 7.6},
                               {"step": 3, "train_loss": 7.2, "eval_loss": 7.3}]
    assert [(role, m.hash) for role, m in audit.models()] == [("audited", "sha256:bb"), ("compared", "sha256:aa")]
    assert audit.metrics() == {"crows_pct_stereotype": 56.2, "compare.crows_pct_stereotype": 54.7}
    assert ONE_OF_EACH[0].measured()[0].metrics == {"wikitext2.ppl": 21.9, "wikitext2.tokens": 8192.0,
                                                    "arc_easy.acc": 0.58}


def test_model_ref_describes_a_loaded_model_and_its_folder(tiny, tiny_folder):
    model, _ = tiny
    ref = ModelRef.describe(model, "tiny", tiny_folder)
    distinct = {p.data_ptr(): p.numel() for p in model.parameters()}  # tied weights once, counted by hand
    assert ref.parameters == sum(distinct.values())
    assert ref.architecture == "LlamaForCausalLM" and ref.model_type == "llama" and ref.dtype == "float32"
    assert ref.layers == model.config.num_hidden_layers and ref.hidden_size == model.config.hidden_size
    assert ref.hash == content_hash(tiny_folder) and ref.path == str(tiny_folder.resolve())
    assert ref.model_bytes == sum(p.numel() * 4 for p in {p.data_ptr(): p for p in model.parameters()}.values()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    assert ref.label == "tiny"
    mixed = copy.deepcopy(model).to(torch.bfloat16)
    mixed.model.norm.float()  # one small float32 tensor among bfloat16 ones
    assert ModelRef.describe(mixed, "mixed").dtype == "bfloat16"


def test_a_quantized_model_keeps_its_parameter_count(tiny):
    from lmforge.compress.quantization.config import RTN
    from lmforge.compress.quantization.driver import quantize

    model, _ = tiny
    before = ModelRef.describe(model, "tiny")
    quantized = copy.deepcopy(model)
    quantize(quantized, RTN(bits=4, group_size=32))
    after = ModelRef.describe(quantized, "tiny-int4")
    assert after.parameters == before.parameters
    assert after.model_bytes < before.model_bytes


def test_a_result_from_a_newer_lmforge_is_refused_in_one_line():
    with pytest.raises(LmforgeError, match="upgrade lmforge"):
        result_from_dict(ONE_OF_EACH[0].to_dict(), SCHEMA_VERSION + 1)


# The first layout of the run store, as lmforge wrote it before typed results (PRAGMA user_version 0).
_LAYOUT_0 = """
CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, status TEXT NOT NULL, started REAL NOT NULL, ended REAL,
    host TEXT, config TEXT NOT NULL DEFAULT '{}', inputs TEXT NOT NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}',
    energy TEXT NOT NULL DEFAULT '{}', versions TEXT NOT NULL DEFAULT '{}', artifacts TEXT NOT NULL DEFAULT '{}',
    error TEXT);
CREATE INDEX runs_started ON runs(started);
"""


def _old_row(db, run_id, command, started, config, inputs, metrics, artifacts=None, status="ok"):
    db.execute("INSERT INTO runs (id, command, status, started, ended, host, config, inputs, metrics, artifacts) "
               "VALUES (?, ?, ?, ?, ?, 'h', ?, ?, ?, ?)",
               (run_id, command, status, started, started + 1, json.dumps(config), json.dumps(inputs),
                json.dumps(metrics), json.dumps(artifacts or {})))


def test_a_store_of_the_first_layout_opens_and_its_runs_get_typed_results(tmp_path):
    base, out = tmp_path / "base", tmp_path / "int4"
    for folder in (base, out):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                        "num_hidden_layers": 30, "_name_or_path": folder.name}))
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(_LAYOUT_0)
        _old_row(db, "r1", "compress", 1.0, {"model": "smollm2-135m", "method": "gptq", "bits": 4, "group_size": 64,
                                             "calib": "web_articles", "seqlen": 2048},
                 {"model": {"path": str(base), "hash": "sha256:base"}},
                 {"baseline.wikitext2_ppl": 21.9, "baseline.model_ram_bytes": 538, "quantized.wikitext2_ppl": 24.1,
                  "quantized.decode_tokens_per_s": 40.0, "quantized.compress_seconds": 60.0},
                 {"model": str(out)})
        _old_row(db, "r2", "eval", 2.0, {"model": str(out), "tasks": ["wikitext2"]},
                 {"model": {"path": str(out), "hash": "sha256:out"}}, {"wikitext2.ppl": 24.2, "speed.model_bytes": 160})
        _old_row(db, "r3", "serve", 3.0, {}, {}, {})
        _old_row(db, "r4", "compress", 4.0, {"model": "m"}, {}, {}, status="failed")
    store = RunStore(path)
    compress, evaluated, served, failed = (store.get(i) for i in ("r1", "r2", "r3", "r4"))
    assert isinstance(compress.result, CompressionResult) and compress.schema_version == SCHEMA_VERSION
    assert compress.result.base.name == "smollm2-135m" and compress.result.base.hash == "sha256:base"
    assert compress.result.base.architecture == "LlamaForCausalLM" and compress.result.base.layers == 30
    assert compress.result.base_metrics == {"wikitext2.ppl": 21.9, "model_bytes": 538.0}  # one spelling with eval's
    assert compress.result.output_metrics == {"wikitext2.ppl": 24.1, "speed.decode_tokens_per_s": 40.0}
    assert compress.result.cost == {"compress_seconds": 60.0}
    assert compress.result.recipe == {"method": "gptq", "bits": 4, "group_size": 64}
    assert compress.result.output.path == str(out.resolve())
    assert evaluated.result.measured()[0].metrics == {"wikitext2.ppl": 24.2, "model_bytes": 160.0}
    assert served.result is None and failed.result is None  # no family, and a failed run has no result
    assert compress.metrics["baseline.wikitext2_ppl"] == 21.9  # the old columns are kept as they were
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r.id for r in RunStore(path).list()] == ["r4", "r3", "r2", "r1"]  # reopening migrates nothing twice


def test_an_old_store_that_cannot_be_migrated_is_still_read_with_typed_results(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(_LAYOUT_0)
        _old_row(db, "r1", "eval", 1.0, {"model": "m"}, {"model": "m"}, {"arc_easy.acc": 0.5})

    def read_only(self):
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        return db

    monkeypatch.setattr(RunStore, "_connect", read_only)
    store = RunStore(path)
    assert store.read_only and store.get("r1").result.measured()[0].metrics == {"arc_easy.acc": 0.5}


def test_training_runs_recorded_the_old_way_keep_their_loss_curve(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    with record_run("train", config={"lr": 3e-3}, inputs={"corpus": "wikitext2"}, store=store,
                    measure_energy=False) as train:  # what `lmforge train` logs: TrainResult.metrics()
        train.log_metrics({"params": 836448, "final_eval_loss": 7.3, "eval_losses": [[10, 7.9], [20, 7.3]]})
        train.add_artifact("model", tmp_path)
    with record_run("finetune", config={"model": "smollm2-135m"}, inputs={"model": "smollm2-135m", "data": "arc_easy"},
                    store=store, measure_energy=False) as finetune:  # FinetuneResult.metrics() holds every step's loss
        finetune.log_metrics({"losses": [2.0, 1.5], "trainable_params": 4096})
    trained, tuned = store.get(train.id).result, store.get(finetune.id).result
    assert trained.history() == [{"step": 10, "eval_loss": 7.9}, {"step": 20, "eval_loss": 7.3}]
    assert trained.model.parameters == 836448 and trained.data["corpus"].name == "wikitext2"
    assert tuned.history() == [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5}]
    assert tuned.base.name == "smollm2-135m" and tuned.data["data"].name == "arc_easy"
