import json

from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.compress import QuantLinear
from lmforge.errors import LmforgeError
from lmforge.models import load_model
from lmforge.runs import CompressionResult, RunStore
from lmforge.runs.hashing import content_hash

FAST = ["--eval-windows", "0", "--seqlen", "32", "--arc-limit", "0", "--speed-tokens", "0"]


def test_compress_saves_a_packed_model_prints_the_table_and_records_a_run(tiny_folder, tmp_path):
    out, report, corpus = tmp_path / "q", tmp_path / "compress.json", tmp_path / "calib.txt"
    corpus.write_text("Rivers carry sand to the sea, and the sea returns it as beaches. " * 40)
    result = CliRunner().invoke(app, ["compress", str(tiny_folder), "--method", "gptq", "--group-size", "32",
                                      "--calib", str(corpus), "--calib-samples", "4", "-o", str(out), "--json", str(report),
                                      "--compressed-tensors", str(tmp_path / "ct"), *FAST])
    assert result.exit_code == 0, result.output
    assert "model RAM" in result.output and "size on disk" in result.output
    data = json.loads(report.read_text())
    assert data["quantized"]["model_ram_bytes"] < data["baseline"]["model_ram_bytes"]
    assert data["quantized"]["disk_bytes"] < data["baseline"]["disk_bytes"]
    model, _ = load_model(out)
    assert isinstance(model.model.layers[0].self_attn.q_proj, QuantLinear)
    assert (tmp_path / "ct" / "config.json").is_file()
    (record,) = RunStore().list(command="compress")
    assert record.status == "ok" and "model" in record.artifacts
    typed = record.result  # logged by the workflow's CompressionResult, not re-derived from flat metrics
    assert isinstance(typed, CompressionResult) and typed.recipe["method"] == "gptq" and typed.recipe["group_size"] == 32
    assert typed.base.hash == content_hash(tiny_folder) and typed.output.hash == content_hash(out)
    assert typed.output.parameters == typed.base.parameters and typed.output.model_bytes < typed.base.model_bytes
    assert typed.calibration.hash == content_hash(corpus) and typed.exports == {"compressed_tensors": str(tmp_path / "ct")}
    assert typed.cost["compress_seconds"] > 0 and "compress_seconds" not in typed.output_metrics


def test_bad_inputs_fail_before_any_work(tiny_folder, tmp_path):
    runner = CliRunner()
    corpus = tmp_path / "calib.txt"
    corpus.write_text("A short calibration text. " * 20)
    cases = [
        (["--method", "rtn", "--group-size", "48"], "group size 48 does not divide"),
        (["--method", "gptq", "--calib", str(corpus), "--calib-samples", "1000"], "asked for 1000"),
        (["--method", "nope"], "unknown method 'nope'"),
        (["--lm-head-bits", "8", "--share-embeddings", "--gguf", str(tmp_path / "m.gguf")], "--share-embeddings cannot be exported"),
        (["--share-embeddings"], "set lm_head_bits too"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["compress", str(tiny_folder), *extra, "-o", str(tmp_path / "x"), *FAST])
        assert isinstance(result.exception, LmforgeError) and message in str(result.exception), result.output
    quantized = tmp_path / "q"
    assert runner.invoke(app, ["compress", str(tiny_folder), "--method", "rtn", "--group-size", "32", "-o", str(quantized),
                               "--eval-windows", "0", "--arc-limit", "0", "--speed-tokens", "0"]).exit_code == 0
    result = runner.invoke(app, ["compress", str(quantized), "--method", "rtn", "-o", str(tmp_path / "y"), *FAST])
    assert isinstance(result.exception, LmforgeError) and "already quantized" in str(result.exception)
