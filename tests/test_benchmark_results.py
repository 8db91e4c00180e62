"""Every result file in benchmarks/results/ says what produced it (benchmarks/provenance.py writes the block)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
FIELDS = ("commit", "dirty", "versions", "models", "data", "machine", "date", "command")


def check(provenance: dict) -> list[str]:
    """The problems with one provenance block ([] when complete)."""
    problems = [f"no '{field}'" for field in FIELDS if field not in provenance]
    if problems:
        return problems
    backfilled = bool(provenance.get("backfilled"))  # an older file: unrecorded fields are null, and it says so
    if not isinstance(provenance["commit"], str) or len(provenance["commit"]) != 40:
        problems.append("commit is not a git hash")
    for model in provenance["models"]:
        if not str(model.get("hash", "")).startswith("sha256:") and "hub_id" not in model:
            problems.append(f"model {model} has no content hash")
    for data in provenance["data"]:
        if not str(data.get("hash", "")).startswith("sha256:"):
            problems.append(f"data file {data.get('path')} has no hash")
    if not {"torch", "transformers"} <= set(provenance["versions"]):
        problems.append("versions lack torch or transformers")
    if not {"cpu", "cores", "threads"} <= set(provenance["machine"]):
        problems.append("machine lacks cpu, cores or threads")
    if not backfilled:
        if not isinstance(provenance["dirty"], bool):
            problems.append("dirty is not true/false")
        missing = [k for k in ("torch", "transformers") if not provenance["versions"][k]]
        missing += [k for k in ("cpu", "cores", "threads") if not provenance["machine"][k]]
        missing += [k for k in ("date", "command") if not provenance[k]]
        problems += [f"{k} is empty" for k in missing]
    return problems


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_result_file_has_provenance(path):
    data = json.loads(path.read_text())
    assert "provenance" in data, f"{path.name} has no provenance; write it with benchmarks/provenance.py save_result"
    assert check(data["provenance"]) == [], path.name


def test_the_helper_writes_a_complete_block(tmp_path, tiny_folder, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from provenance import save_result

    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--out", "r.json"])
    (tmp_path / "data.txt").write_text("some data")
    save_result(tmp_path / "r.json", {"rows": [1]}, models=[tiny_folder], data=[tmp_path / "data.txt"],
                peers={"missing-peer": (tmp_path / "no-venv" / "python", "nothing")})
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["rows"] == [1] and check(written["provenance"]) == []
    block = written["provenance"]
    assert block["command"] == "python benchmarks/x.py --out r.json"
    assert block["versions"]["missing-peer"] is None  # a peer that is not installed is recorded as absent
    assert block["models"][0]["hash"].startswith("sha256:") and block["data"][0]["hash"].startswith("sha256:")


def test_an_incomplete_block_is_caught():
    assert check({"commit": "0" * 40}) == [f"no '{f}'" for f in FIELDS[1:]]
    block = {"commit": "0" * 40, "dirty": None, "versions": {"torch": "2.13.0", "transformers": None}, "models": [],
             "data": [{"path": "x"}], "machine": {"cpu": None, "cores": None, "threads": None}, "date": None, "command": None}
    assert "data file x has no hash" in check(block) and "dirty is not true/false" in check(block)


def test_tuning_rule_takes_the_least_departure_from_the_paper_within_tolerance(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from tune_defaults import choose

    def row(method, share, nll, damp=0.01):
        return {"method": method, "damp": damp, "sink_share": share, "nll": nll}

    rows = [{"method": "dense", "nll": 3.0}, row("gptq", 0.0, 3.51), row("gptq", 0.05, 3.2015), row("gptq", 0.1, 3.2020),
            row("gptq", 0.4, 3.1890), row("sparsegpt", 0.0, 3.7714), row("sparsegpt", 0.3, 3.6792),
            row("sparsegpt", 0.05, 3.7200)]
    chosen = choose(rows, tolerance=0.005)
    # gptq: best 3.1890, the tie band reaches 3.2049: 0.05 is the smallest share inside it (0 is far outside)
    assert chosen["gptq"]["sink_share"] == 0.05
    # sparsegpt: band to 3.6976; 0.05 (3.72) is outside it, so the best, 0.3, is the choice
    assert chosen["sparsegpt"]["sink_share"] == 0.3
    assert choose(rows, tolerance=0.0)["gptq"]["sink_share"] == 0.4  # no tolerance: plain argmin
    assert "dense" not in chosen


def test_the_shipped_sink_share_is_the_one_the_tuning_split_chose():
    from lmforge.compress import GPTQ, SparseGPT, Structured
    from lmforge.compress.defaults import SINK_SHARE

    result = json.loads((ROOT / "benchmarks" / "results" / "tune_defaults_choice.json").read_text())
    assert result["chosen"]["gptq"]["sink_share"] == GPTQ().sink_share == SINK_SHARE
    assert result["chosen"]["sparsegpt"]["sink_share"] == SparseGPT(0.5).sink_share == SINK_SHARE
    assert result["chosen"]["structured"]["refit"] is Structured().reconstruct is True
    read = [d["path"] for d in result["provenance"]["data"]]
    assert any(p.endswith("web_articles") for p in read) and not any("wikitext" in p for p in read)  # never test data
