"""Half precision and devices: bf16 checkpoints through quickstart's steps, `model.half()` on a quantized model, the
packed kernel's operand checks and cache stamp, --dtype / --device resolution, and the CUDA path (skipped without a GPU)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.compress import GPTQ, QuantLinear, quantize
from lmforge.compress.storage import kernels
from lmforge.errors import LmforgeError
from lmforge.models import load_model, save_model, tiny_model_and_tokenizer
from lmforge.models.loading import resolve_device, resolve_dtype
from lmforge.runs import RunStore

TEXT = "Rivers carry sand to the sea, and the sea returns it as beaches. Wind wears rocks down into sand. " * 30


@pytest.fixture(scope="module")
def bf16_folder(tmp_path_factory):
    model, tokenizer = tiny_model_and_tokenizer([TEXT], hidden_size=64, layers=2)
    return save_model(model.to(torch.bfloat16), tokenizer, tmp_path_factory.mktemp("bf16") / "model")


def test_dtype_auto_keeps_a_bf16_checkpoint_in_bf16_and_the_default_is_float32(bf16_folder):
    assert load_model(bf16_folder, dtype="auto")[0].dtype == torch.bfloat16
    assert load_model(bf16_folder)[0].dtype == torch.float32
    assert load_model(bf16_folder, dtype="float16")[0].dtype == torch.float16
    with pytest.raises(LmforgeError, match="unknown dtype 'float64'"):
        resolve_dtype("float64")


def test_device_resolution():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LmforgeError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LmforgeError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.slow
def test_a_bf16_checkpoint_goes_through_quickstarts_steps(bf16_folder, tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT)
    runner = CliRunner()
    fast = ["--seqlen", "32", "--dtype", "auto", "--device", "cpu"]
    steps = [
        ["compress", str(bf16_folder), "--method", "gptq", "--group-size", "32", "--calib", str(corpus), "--calib-samples", "4",
         "--eval-windows", "2", "--arc-limit", "0", "--speed-tokens", "0", "--threads", "1", "-o", str(tmp_path / "q"), *fast],
        ["prune", str(bf16_folder), "--method", "sparsegpt", "--calib", str(corpus), "--samples", "4", "-o", str(tmp_path / "p"), *fast],
        ["eval", str(tmp_path / "q"), "--task", str(corpus), "--limit", "2", "--json", str(tmp_path / "q.json"), *fast],
        ["eval", str(tmp_path / "p"), "--task", str(corpus), "--limit", "2", *fast],
        ["audit", str(bf16_folder), "--suite", "bias", "--limit", "4", "--resamples", "20", "--no-sentiment",
         "--dtype", "auto", "--device", "cpu"],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    ppl = json.loads((tmp_path / "q.json").read_text())["results"][str(corpus)]["ppl"]
    assert 1 < ppl < 1e4
    assert load_model(tmp_path / "p", dtype="auto")[0].dtype == torch.bfloat16
    records = RunStore().list(limit=None)
    recorded = {r.command: r.metrics.get("model.dtype") for r in records}
    assert recorded["compress"] == recorded["prune"] == recorded["eval"] == recorded["audit"] == "bfloat16", recorded


def quantized_model():
    model, tokenizer = tiny_model_and_tokenizer([TEXT], hidden_size=64, layers=2)
    calibration = tokenizer(TEXT, return_tensors="pt").input_ids[0, :128].reshape(4, 32)
    quantize(model, GPTQ(bits=4, group_size=32), calibration)
    return model


@pytest.mark.skipif(not kernels.available(), reason="no C compiler for the packed kernel")
def test_half_on_a_quantized_model_decodes_correctly_instead_of_reading_past_its_scales():
    model = quantized_model()
    ids = torch.tensor([[5, 9, 17]])  # 3 rows: the packed-kernel path
    with torch.no_grad():
        reference = model(ids).logits
        model.half()
        layer = model.model.layers[0].self_attn.q_proj
        assert isinstance(layer, QuantLinear) and layer.scales.dtype == torch.float16
        half = model(ids).logits.float()
    torch.testing.assert_close(half, reference, rtol=2e-2, atol=2e-2 * float(reference.abs().max()))


@pytest.mark.skipif(not kernels.available(), reason="no C compiler for the packed kernel")
def test_the_packed_kernel_refuses_operands_it_would_misread():
    layer = quantized_model().model.layers[0].mlp.down_proj
    x = torch.randn(2, layer.in_features)
    args = (layer.qweight, layer.scales, layer.zeros, 4, layer.group_size)
    expected = x @ layer.dequantize().T
    torch.testing.assert_close(kernels.packed_matmul(x, *args), expected, rtol=1e-4, atol=1e-4)
    bad = {
        "scales is torch.float16": (x, layer.qweight, layer.scales.half(), layer.zeros, 4, layer.group_size),
        "x is torch.bfloat16": (x.bfloat16(), *args),
        "qweight must be a contiguous": (x, layer.qweight.T.contiguous().T, layer.scales, layer.zeros, 4, layer.group_size),
        "qweight has shape": (x, layer.qweight[:-1], layer.scales, layer.zeros, 4, layer.group_size),
        "scales has shape": (x, layer.qweight, layer.scales[:, :1].contiguous(), layer.zeros, 4, layer.group_size),
        "for input width 32": (x[:, :32], *args),
        "group size 48": (x, layer.qweight, layer.scales, layer.zeros, 4, 48),
        "storage of 2 bits": (x, layer.qweight, layer.scales, layer.zeros, 2, layer.group_size),
    }
    for message, operands in bad.items():
        with pytest.raises(LmforgeError, match=message):
            kernels.packed_matmul(*operands)


@pytest.mark.skipif(not kernels.available(), reason="no C compiler for the packed kernel")
def test_a_cached_kernel_that_does_not_match_its_stamp_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    kernels._library.cache_clear()
    try:
        assert kernels._library() is not None
        (library,) = (tmp_path / "kernels").glob("*.so")
        digest = kernels.source_digest()
        assert kernels.cached_library_matches(library, digest)
        built = library.read_bytes()
        damaged = library.with_suffix(".tmp")
        damaged.write_bytes(built[: len(built) // 2])  # truncated, as by a full disk
        damaged.replace(library)  # a new file: the copy this process has mapped stays intact
        assert not kernels.cached_library_matches(library, digest)
        assert not kernels.cached_library_matches(library, "0" * 64)  # another source
        kernels._library.cache_clear()
        assert kernels._library() is not None and library.read_bytes() == built
        assert kernels.cached_library_matches(library, digest)
    finally:
        kernels._library.cache_clear()


@pytest.mark.cuda
def test_quantized_and_2_4_models_run_on_cuda_like_on_cpu():
    from lmforge.compress import SparseGPT, prune
    from lmforge.compress.storage.sparse import semi_structured_on_cuda

    model = quantized_model()
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        cpu = model(ids).logits
        gpu = copy.deepcopy(model).to("cuda")(ids.to("cuda")).logits.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    sparse, tokenizer = tiny_model_and_tokenizer([TEXT], hidden_size=64, layers=2)
    prune(sparse, SparseGPT(0.5, pattern="2:4"), tokenizer(TEXT, return_tensors="pt").input_ids[0, :128].reshape(4, 32))
    with torch.no_grad():
        dense = sparse.to("cuda", torch.float16)(ids.to("cuda")).logits
        assert semi_structured_on_cuda(sparse) > 0
        torch.testing.assert_close(sparse(ids.to("cuda")).logits, dense, rtol=1e-2, atol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_architecture_compresses_in_half_precision_like_in_float32(dtype):
    """GPTQ, AWQ, SparseGPT and structured pruning on a half-precision model (statistics in float32) land within a
    few percent of the same compression done in float32, for every architecture."""
    from lmforge.compress import AWQ, SparseGPT, Structured, prune, structured_prune
    from lmforge.data import corpus_from_texts
    from lmforge.evaluate import perplexity
    from lmforge.models import tiny_tokenizer
    from lmforge.models.tiny import TINY_ARCHITECTURES, tiny_causal_lm

    tokenizer = tiny_tokenizer([TEXT])
    calibration = tokenizer(TEXT, return_tensors="pt").input_ids[0, :128].reshape(4, 32)
    corpus = corpus_from_texts([TEXT])
    steps = {"gptq": lambda m: quantize(m, GPTQ(bits=4, group_size=32), calibration),
             "awq": lambda m: quantize(m, AWQ(bits=4, group_size=32), calibration),
             "sparsegpt": lambda m: prune(m, SparseGPT(0.5), calibration),
             "structured": lambda m: structured_prune(m, Structured(0.0, 0.25), calibration)}
    for architecture in TINY_ARCHITECTURES:
        for name, step in steps.items():
            ppl = {}
            for precision in (torch.float32, dtype):
                model = tiny_causal_lm(architecture, vocab_size=len(tokenizer)).to(precision)
                step(model)
                assert model.dtype == precision
                ppl[precision] = perplexity(model, tokenizer, corpus, seqlen=32, limit=2).ppl
            assert abs(ppl[dtype] / ppl[torch.float32] - 1) < 0.03, (architecture, name, ppl)
