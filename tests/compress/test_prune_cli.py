"""`lmforge prune` and `lmforge optimize` end to end on the tiny model folder."""

import json

from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_prune_writes_a_compact_sparse_model(tiny_folder, tmp_path):
    from lmforge.compress.storage.sparse import load_sparse

    out = tmp_path / "pruned"
    result = invoke("prune", tiny_folder, "--method", "magnitude", "--sparsity", 0.5, "-o", out, "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert abs(summary["sparsity"] - 0.5) < 1e-6
    assert summary["storage"]["stored_bytes"] < summary["storage"]["dense_bytes"]
    model, _ = load_sparse(out)
    assert float((model.model.layers[0].mlp.up_proj.weight == 0).float().mean()) == 0.5


def test_prune_rejects_bad_patterns(tiny_folder, tmp_path):
    result = invoke("prune", tiny_folder, "--pattern", "4:4", "-o", tmp_path / "x")
    assert result.exit_code != 0 and "1 ≤ N < M" in str(result.exception)


def test_optimize_finds_the_front_caches_and_explains_an_impossible_budget(tiny_folder, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Water carries sand to the sea and the wind moves the dunes. " * 60)
    common = ["optimize", tiny_folder, "--quants", "rtn", "--bits", "4", "--group-sizes", "32", "--sparsities", "0", "--head-bits", "none,8",
              "--corpus", corpus, "--ppl-windows", 2, "--ppl-seqlen", 32, "--plot", tmp_path / "front"]
    result = invoke(*common, "--max-mb", 1000, "-o", tmp_path / "best", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [m["recipe"] for m in data["measurements"]] == ["dense", "rtn-w4-g32", "rtn-w4-g32+head8"]
    assert data["best"] in data["front"] and (tmp_path / "front.png").stat().st_size > 1000
    assert "<img" in (tmp_path / "front.html").read_text() and (tmp_path / "best" / "config.json").is_file()
    dense, rtn, head8 = data["measurements"]
    assert rtn["size_mb"] < dense["size_mb"]
    config = json.loads((tiny_folder / "config.json").read_text())
    assert not config.get("tie_word_embeddings")  # an untied fp32 head: int8 per channel stores it in about a quarter
    head_fp32_mb = config["vocab_size"] * config["hidden_size"] * 4 / 1e6
    assert 0.6 < (rtn["size_mb"] - head8["size_mb"]) / head_fp32_mb < 0.76
    again = invoke(*common, "--max-mb", 0.001)
    assert "(cached)" in again.output
    assert again.exit_code != 0
    assert "no recipe meets the budget" in str(again.exception) and "closest: rtn-w4-g32" in str(again.exception)
    untied = invoke(*common, "--share-embeddings")
    assert untied.exit_code != 0 and "needs a head tied to the embeddings" in str(untied.exception)


def test_recipe_grid_names_and_shares_only_quantized_heads():
    from lmforge.workflows.optimize import recipe_grid

    keys = [r.key for r in recipe_grid(["rtn"], [4], [64], [0.0, 0.5], ["unstructured"], "wanda", [None, 8], True)]
    assert keys == ["dense", "rtn-w4-g64", "rtn-w4-g64+head8-shared",
                    "wanda-50%", "wanda-50%+rtn-w4-g64", "wanda-50%+rtn-w4-g64+head8-shared"]


def test_structured_prune_writes_a_smaller_model_that_transformers_loads(tiny_folder, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    corpus = tmp_path / "c.txt"
    corpus.write_text("Water carries sand to the sea and the wind moves the dunes. " * 60)
    out = tmp_path / "smaller"
    result = invoke("prune", tiny_folder, "--method", "structured", "--mlp", 0.5, "--calib", corpus, "--samples", 2,
                    "--seqlen", 32, "-o", out, "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    before, after = AutoConfig.from_pretrained(tiny_folder), AutoConfig.from_pretrained(out)
    assert after.intermediate_size == before.intermediate_size // 2
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["parameters_after"] < summary["parameters_before"] and summary["config"]["reconstruct"] is True
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.model.layers[0].mlp.down_proj.weight.shape[1] == after.intermediate_size
