"""Every GGUF lmforge writes, opened by llama.cpp itself (llama-cpp-python in its own venv, through
benchmarks/llama_cpp_probe.py): it loads, generates, and its logits and perplexity are lmforge's.

The venv is ``.venv-llama`` at the repository root (``LMFORGE_LLAMA_PYTHON`` overrides); .ci/run builds it
when missing, so under CI=true a missing venv is a failure, elsewhere a skip.
"""

import copy
import json
import math
import os
import subprocess
from pathlib import Path

import gguf
import pytest
import torch

from lmforge.compress import GPTQ, RTN, quantize
from lmforge.compress.export.gguf import export_gguf
from lmforge.compress.export.gguf_recipes import RECIPES
from lmforge.models import load_model, tiny_model_and_tokenizer, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "benchmarks" / "llama_cpp_probe.py"
TOKENS = 96


@pytest.fixture(scope="module")
def llama_python() -> Path:
    python = Path(os.environ.get("LMFORGE_LLAMA_PYTHON", ROOT / ".venv-llama" / "bin" / "python"))
    if not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{python} is missing: .ci/run builds it (pip install llama-cpp-python==0.3.36)")
        pytest.skip(f"llama.cpp venv {python} not built")
    return python


def llama_cpp(python: Path, request: dict) -> dict:
    request = {"extra_buffers": False, **request}  # the repacked/AMX buffers crash on these tiny shapes (see the probe)
    out = subprocess.run([str(python), str(PROBE)], input=json.dumps(request), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wide():
    """A tiny llama whose rows (256, 512 columns) every block type divides, 4 layers so recipes mix types."""
    return tiny_model_and_tokenizer(hidden_size=256, intermediate_size=512, layers=4, heads=4, kv_heads=2, seed=1)


def ids(vocab: int, count: int = TOKENS, seed: int = 0) -> list[int]:
    return torch.randint(3, vocab, (count,), generator=torch.Generator().manual_seed(seed)).tolist()


def ppl(nll: float, tokens: list[int]) -> float:
    return math.exp(nll / (len(tokens) - 1))


def lmforge_nll(model, tokens: list[int]) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0, :-1].double()
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(tokens[1:]), reduction="sum"))


def check_in_llama_cpp(python, path, reference_model, tokens, logit_tolerance, ppl_tolerance=0.01):
    answer = llama_cpp(python, {"op": "score", "model": str(path), "windows": [tokens], "threads": 1, "logits_of": tokens[:24]})
    with torch.no_grad():
        expected = reference_model(torch.tensor([tokens[:24]])).logits[0]
    spread = float(expected.std())
    assert float((torch.tensor(answer["logits"]) - expected).abs().max()) <= logit_tolerance * spread
    ours, theirs = ppl(lmforge_nll(reference_model, tokens), tokens), ppl(answer["window_nll"][0], tokens)
    assert abs(theirs / ours - 1) < ppl_tolerance, (theirs, ours)
    generated = llama_cpp(python, {"op": "generate", "model": str(path), "prompt": tokens[:8], "tokens": 4, "threads": 1})
    assert len(generated["ids"]) == 4


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_type_loads_and_scores_in_llama_cpp(llama_python, wide, tmp_path, recipe):
    """The reference is the model the file decodes to (transformers' GGUF loader, gguf-py's dequantizer), so
    this checks the layout llama.cpp reads. llama.cpp rounds activations to the weights' kind before each
    matmul (bf16 for BF16, 8-bit blocks for quantized types), and keeps its KV cache in f16: that moves these
    logits by ~0.1 % of their spread for F32/F16, ~1.5 % for BF16, a few percent for the quantized types."""
    model, tokenizer = wide
    path = export_gguf(model, tokenizer, tmp_path / f"{recipe}.gguf", recipe).path
    decoded = load_model(path)[0]
    tolerance = {"F32": 5e-3, "F16": 5e-3, "BF16": 0.03}.get(recipe, 0.08)
    check_in_llama_cpp(llama_python, path, decoded, ids(model.config.vocab_size), tolerance)


def test_types_are_the_ones_llama_cpps_quantizer_chooses(llama_python, tmp_path):
    """llama.cpp's own quantizer run on our F32 file is the reference for each recipe's per-tensor types,
    fallbacks included (hidden 320 is divided by 32 but not by 256)."""
    model, tokenizer = tiny_model_and_tokenizer(hidden_size=320, intermediate_size=512, layers=8, heads=4, kv_heads=1)
    source = export_gguf(model, tokenizer, tmp_path / "f32.gguf", "F32").path
    for recipe in ("Q4_0", "Q5_1", "Q8_0", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K"):
        theirs = tmp_path / f"llama-{recipe}.gguf"
        llama_cpp(llama_python, {"op": "quantize", "source": str(source), "target": str(theirs), "ftype": recipe, "threads": 1})
        expected = {t.name: t.tensor_type.name for t in gguf.GGUFReader(theirs).tensors}
        assert export_gguf(model, tokenizer, tmp_path / f"{recipe}.gguf", recipe).types == expected, recipe


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gpt2", "gpt_neox"])
def test_architectures_match_transformers_in_llama_cpp(llama_python, tmp_path, arch):
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    shape = {"gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
             "gpt_neox": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=256)}.get(arch, dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, **({"head_dim": 32} if arch == "qwen3" else {}),
        **({"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 32} if arch == "gemma2" else {})))
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), pad_token_id=0, **shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    for name, parameter in model.named_parameters():  # Gemma's norms start at 0 (scale 1 + w): make them matter
        if "norm" in name:
            torch.nn.init.normal_(parameter, mean=0.5 if arch != "gemma2" else 0.0, std=0.3)
    if arch == "qwen2":  # qwen2 has q/k/v biases; make them matter
        for layer in model.model.layers:
            torch.nn.init.normal_(layer.self_attn.q_proj.bias, std=0.5)
            torch.nn.init.normal_(layer.self_attn.k_proj.bias, std=0.5)
    # named "model": llama.cpp looks up Phi-3's <|end|> token when the file is named after phi3, and a tiny vocabulary lacks it
    path = export_gguf(model, tokenizer, tmp_path / "model.gguf", "F32").path
    check_in_llama_cpp(llama_python, path, model, ids(config.vocab_size), 5e-3)
    # and lmforge's own codes (int8 g32 = Q8_0's grid): llama.cpp scores the quantized model's perplexity within 1 %
    quantize(model, RTN(bits=8, group_size=32))
    path = export_gguf(model, tokenizer, tmp_path / "q8.gguf").path
    assert {t.tensor_type.name for t in gguf.GGUFReader(path).tensors if t.name.startswith("blk.") and len(t.shape) == 2} == {"Q8_0"}
    check_in_llama_cpp(llama_python, path, model, ids(config.vocab_size), 0.08)  # llama.cpp rounds activations to 8 bits


def test_a_quantized_folder_scores_the_same_in_llama_cpp(llama_python, tiny_folder, tmp_path, wide):
    """lmforge's own GPTQ int4 g32 codes, copied into Q4_0: llama.cpp's perplexity is lmforge's, within 1 %."""
    model, tokenizer = copy.deepcopy(wide[0]), wide[1]
    calibration = torch.randint(3, model.config.vocab_size, (4, 64), generator=torch.Generator().manual_seed(3))
    quantize(model, GPTQ(bits=4, group_size=32), calibration)
    path = export_gguf(model, tokenizer, tmp_path / "gptq.gguf").path
    assert {t.tensor_type.name for t in gguf.GGUFReader(path).tensors if t.name.startswith("blk.") and len(t.shape) == 2} == {"Q4_0"}
    check_in_llama_cpp(llama_python, path, model, ids(model.config.vocab_size), 0.08)


def test_gptq_onto_block_grids_loads_in_llama_cpp(llama_python, wide, tmp_path):
    model, tokenizer = wide
    calibration = torch.randint(3, model.config.vocab_size, (4, 64), generator=torch.Generator().manual_seed(3))
    export = export_gguf(model, tokenizer, tmp_path / "q4km.gguf", "Q4_K_M", calibration=calibration)
    assert {"Q4_K", "Q6_K"} <= set(export.types.values())
    check_in_llama_cpp(llama_python, export.path, load_model(export.path)[0], ids(model.config.vocab_size), 0.08)


def test_round_to_nearest_is_as_good_as_llama_cpps_quantizer(llama_python, tmp_path):
    """Before any calibration, lmforge's grids lose no more than 3 % weight error to ggml's own search
    (measured: Q4_K 1 % worse, Q5_K and Q6_K 1-4 % better; Q4_0 and Q5_1 are the same bytes)."""
    import numpy as np

    model, tokenizer = tiny_model_and_tokenizer(hidden_size=512, intermediate_size=1024, layers=2, heads=8, kv_heads=4, seed=1)
    source = export_gguf(model, tokenizer, tmp_path / "f32.gguf", "F32").path
    original = {t.name: np.array(t.data) for t in gguf.GGUFReader(source).tensors if t.name.startswith("blk.") and len(t.shape) == 2}

    def error(path):
        tensors = [t for t in gguf.GGUFReader(path).tensors if t.name in original]
        return np.mean([((gguf.quants.dequantize(t.data, t.tensor_type).reshape(original[t.name].shape) - original[t.name]) ** 2).sum()
                        / (original[t.name] ** 2).sum() for t in tensors])
    for recipe in ("Q4_K_S", "Q5_K_S", "Q6_K", "Q4_0", "Q5_1"):
        theirs = tmp_path / f"llama-{recipe}.gguf"
        llama_cpp(llama_python, {"op": "quantize", "source": str(source), "target": str(theirs), "ftype": recipe, "threads": 1})
        ours = export_gguf(model, tokenizer, tmp_path / f"{recipe}.gguf", recipe).path
        assert error(ours) <= 1.03 * error(theirs), recipe
