"""For each architecture, as a user would: `lmforge compress --method gptq --bits 4 --group-size 32` then `lmforge eval`,
and `lmforge prune --method sparsegpt` then `lmforge eval`, each perplexity checked against an independent dense twin."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.compress import QuantLinear, SparseGPT, prune
from lmforge.data import calibration_batches, corpus_from_path
from lmforge.evaluate import perplexity
from lmforge.models import load_model, save_model, tiny_tokenizer
from lmforge.models.tiny import TINY_ARCHITECTURES, tiny_causal_lm

TEXT = "Rivers carry sand to the sea, and the sea returns it as beaches. Wind wears rocks down into sand. " * 30
SEQLEN, WINDOWS = 32, 4


def cli_perplexity(folder, corpus, tmp_path) -> float:
    out = tmp_path / f"eval-{folder.name}.json"
    result = CliRunner().invoke(app, ["eval", str(folder), "--task", str(corpus), "--seqlen", str(SEQLEN),
                                      "--limit", str(WINDOWS), "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["results"][str(corpus)]["ppl"]


def twin_perplexity(model, tokenizer, corpus) -> float:
    return perplexity(model, tokenizer, corpus_from_path(corpus), protocol="windows", seqlen=SEQLEN, limit=WINDOWS).ppl


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(TINY_ARCHITECTURES))
def test_gptq_and_sparsegpt_from_the_cli_match_their_dense_twins(architecture, tmp_path, dequantized_twin):
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT)
    tokenizer = tiny_tokenizer([TEXT])
    source = save_model(tiny_causal_lm(architecture, vocab_size=len(tokenizer)), tokenizer, tmp_path / "source")
    runner = CliRunner()

    quantized = tmp_path / "gptq"
    result = runner.invoke(app, ["compress", str(source), "--method", "gptq", "--bits", "4", "--group-size", "32",
                                 "--calib", str(corpus), "--calib-samples", "4", "--seqlen", str(SEQLEN), "-o", str(quantized),
                                 "--eval-windows", "0", "--arc-limit", "0", "--speed-tokens", "0", "--threads", "1"])
    assert result.exit_code == 0, result.output
    model, _ = load_model(quantized)
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) >= 4 * model.config.num_hidden_layers
    expected = twin_perplexity(dequantized_twin(model), tokenizer, corpus)
    assert abs(cli_perplexity(quantized, corpus, tmp_path) - expected) <= 1e-4 * expected

    pruned = tmp_path / "sparsegpt"
    result = runner.invoke(app, ["prune", str(source), "--method", "sparsegpt", "--sparsity", "0.5", "--calib", str(corpus),
                                 "--samples", "4", "--seqlen", str(SEQLEN), "-o", str(pruned)])
    assert result.exit_code == 0, result.output
    twin, _ = load_model(source)  # the same prune in-process, kept dense: the masked model
    calibration = calibration_batches(tokenizer, corpus_from_path(corpus), 4, SEQLEN, seed=0)
    report = prune(twin, SparseGPT(0.5), calibration)
    assert abs(report.sparsity - 0.5) < 0.01
    expected = twin_perplexity(twin, tokenizer, corpus)
    assert abs(cli_perplexity(pruned, corpus, tmp_path) - expected) <= 1e-4 * expected
