import pytest

from lmforge.errors import LmforgeError
from lmforge.runs import RunStore, content_hash, record_run


def test_record_run_stores_config_inputs_metrics_and_status(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello")
    with record_run("eval", config={"seqlen": 64}, inputs={"corpus": corpus, "model": "smollm2-135m"},
                    store=store, measure_energy=False) as run:
        run.log_metrics({"wikitext2.ppl": 12.5})
    record = store.get(run.id)
    assert record.status == "ok" and record.command == "eval"
    assert record.config == {"seqlen": 64}
    assert record.inputs["corpus"]["hash"] == content_hash(corpus)
    assert record.inputs["model"] == "smollm2-135m"
    assert record.metrics == {"wikitext2.ppl": 12.5}
    assert "torch" in record.versions and record.seconds >= 0


def test_a_failing_command_is_recorded_as_failed(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(ValueError):
        with record_run("compress", store=store, measure_energy=False):
            raise ValueError("boom")
    (record,) = store.list()
    assert record.status == "failed" and "boom" in record.error


def test_lookup_by_prefix_and_latest(tmp_path):
    from lmforge.runs import RunRecord

    store = RunStore(tmp_path / "runs.sqlite")
    ids = ["20260101-000000-aaaaaa", "20260101-000001-aabbbb", "20260101-000002-cccccc"]
    for i, run_id in enumerate(ids):
        store.insert(RunRecord(id=run_id, command="eval", status="ok", started=float(i), ended=i + 1.0, host=None))
    assert store.get("latest").id == ids[-1]
    assert store.get("20260101-000001").id == ids[1]  # a prefix, not the whole id
    assert store.get("20260101-000002-c").id == ids[2]
    assert store.get(ids[0]).id == ids[0]
    with pytest.raises(LmforgeError, match="matches 3 runs"):
        store.get("20260101-00000")
    assert [r.id for r in store.list()] == ids[::-1]
    with pytest.raises(LmforgeError, match="no run"):
        store.get("zzz")


def test_content_hash_changes_with_content(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"1")
    first = content_hash(folder)
    (folder / "a.bin").write_bytes(b"2")
    assert content_hash(folder) != first
