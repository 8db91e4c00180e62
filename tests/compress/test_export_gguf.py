import copy

import gguf
import pytest
import torch
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.compress import AWQ, RTN, QuantLinear, export_gguf, quantize
from lmforge.compress.export.gguf import pre_tokenizer_name
from lmforge.compress.grid import expand_groups
from lmforge.errors import LmforgeError
from lmforge.models import load_model, tiny_model_and_tokenizer

SCHEMES = {
    "Q4_0": RTN(bits=4, group_size=32),
    "Q4_1": RTN(bits=4, group_size=64, symmetric=False),
    "Q8_0": RTN(bits=8, group_size=None),
}
LINEARS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
FAST = ["--eval-windows", "0", "--seqlen", "32", "--arc-limit", "0", "--speed-tokens", "0"]
TEXT = "Erosion wears rocks down: 12 rivers, 3 glaciers and the wind!"


def quantized_copy(tiny, config, calibration=None):
    model, tokenizer = tiny
    model = copy.deepcopy(model)
    quantize(model, config, calibration)
    return model, tokenizer


def llama_cpp_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """convert_hf_to_gguf.py's ``LlamaModel.permute``: the row order GGUF files store q and k in."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("ggml_type", SCHEMES)
def test_blocks_decode_to_our_weights_up_to_fp16_scales(tiny, tmp_path, ggml_type):
    model, tokenizer = quantized_copy(tiny, SCHEMES[ggml_type])
    tensors = {t.name: t for t in gguf.GGUFReader(export_gguf(model, tokenizer, tmp_path / "m.gguf").path).tensors}
    heads = {"attn_q": model.config.num_attention_heads, "attn_k": model.config.num_key_value_heads}
    for index, layer in enumerate(model.model.layers):
        for module_name, gguf_name in LINEARS.items():
            module = layer.get_submodule(module_name)
            tensor = tensors[f"blk.{index}.{gguf_name}.weight"]
            assert tensor.tensor_type.name == ggml_type
            decoded = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type))
            cols = module.in_features
            # d (and Q4_1's m = -zero·scale) are fp16: relative error ≤ 2⁻¹¹, so |error| ≤ 2⁻¹¹·(q + zero)·scale
            bound = 2**-11 * (module.codes().float() + expand_groups(module.zeros.float(), cols)) * expand_groups(module.scales, cols)
            expected = module.dequantize()
            if gguf_name in heads:
                expected, bound = (llama_cpp_permute(t, heads[gguf_name]) for t in (expected, bound))
            assert ((decoded - expected).abs() <= bound).all(), f"blk.{index}.{gguf_name}"
    assert tensors["token_embd.weight"].tensor_type.name == "F32"
    assert torch.equal(torch.from_numpy(tensors["output.weight"].data.copy()), model.lm_head.weight)
    assert torch.equal(torch.from_numpy(tensors["blk.1.ffn_norm.weight"].data.copy()), model.model.layers[1].post_attention_layernorm.weight)


@pytest.mark.parametrize("ggml_type", SCHEMES)
def test_loads_back_with_our_logits_and_tokenizer(tiny, tmp_path, ggml_type):
    model, tokenizer = quantized_copy(tiny, SCHEMES[ggml_type])
    for module in model.modules():
        if isinstance(module, QuantLinear):  # scales the file holds exactly: Q4_0 and Q8_0 are then our weights
            module.scales.copy_(module.scales.half().float())
    tokens = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    loaded, loaded_tokenizer = load_model(export_gguf(model, tokenizer, tmp_path / "m.gguf").path)
    # Q4_1 still rounds m = -zero·scale to fp16 (weights move by ≤ 15·scale·2⁻¹¹): logits of this model
    # (|logit| < 1) move by ~3e-4. A wrong q/k row order moves them by ~8e-3, a wrong block layout by far more.
    tolerance = 1e-3 if ggml_type == "Q4_1" else 1e-5
    torch.testing.assert_close(logits(loaded, tokens), logits(model, tokens), rtol=0, atol=tolerance)
    assert loaded_tokenizer.encode(TEXT) == tokenizer.encode(TEXT)


def test_tied_embeddings_are_written_once(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(layers=1, hidden_size=64, tie_word_embeddings=True)
    quantize(model, RTN(bits=4, group_size=32))
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf").path
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}
    tokens = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(load_model(path)[0], tokens), logits(model, tokens), rtol=0, atol=1e-3)


def test_pre_tokenizer_is_named_only_when_llama_cpp_splits_text_the_same_way(tiny):
    from tokenizers import Regex, pre_tokenizers

    model, tokenizer = tiny
    assert pre_tokenizer_name(model, tokenizer) == "gpt-2"
    smollm = copy.deepcopy(tokenizer)
    smollm.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    assert pre_tokenizer_name(model, smollm) == "smollm"
    llama3 = copy.deepcopy(tokenizer)
    llama3.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated"), pre_tokenizers.ByteLevel(use_regex=False)])
    with pytest.raises(LmforgeError, match="pass pre_tokenizer="):
        pre_tokenizer_name(model, llama3)


def test_refuses_what_gguf_cannot_hold_exactly(tiny, tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    path = tmp_path / "m.gguf"
    calibration = torch.randint(0, tiny[0].config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    cases = [
        (quantized_copy(tiny, RTN(bits=3, group_size=32)), "int3 has no exact GGUF block type"),
        (quantized_copy(tiny, RTN(bits=4, group_size=16)), r"model\.layers\.0\.self_attn\.q_proj: group size 16 is not a multiple of 32"),
        (quantized_copy(tiny, RTN(bits=8, group_size=32, symmetric=False)), "asymmetric int8"),
        (quantized_copy(tiny, AWQ(bits=4, group_size=32, grid=2), calibration), "activation-aware input scale"),
        ((OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2)),
          tiny[1]), "llama.cpp does not run 'opt' models, so GGUF export cannot write them"),
    ]
    for (model, tokenizer), message in cases:
        with pytest.raises(LmforgeError, match=message):
            export_gguf(model, tokenizer, path)
    assert not path.exists()


def test_compress_cli_writes_a_gguf_that_loads(tiny_folder, tmp_path):
    out, path = tmp_path / "q", tmp_path / "q.gguf"
    runner = CliRunner()
    result = runner.invoke(app, ["compress", str(tiny_folder), "--method", "rtn", "--bits", "4", "--group-size", "32",
                                 "-o", str(out), "--gguf", str(path), *FAST])
    assert result.exit_code == 0, result.output
    tokens = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    # scales are not pre-rounded here: fp16 d moves these logits by ~2e-4
    torch.testing.assert_close(logits(load_model(path)[0], tokens), logits(load_model(out)[0], tokens), rtol=0, atol=1e-3)
    result = runner.invoke(app, ["compress", str(tiny_folder), "--method", "rtn", "--bits", "3", "-o", str(tmp_path / "x"),
                                 "--gguf", str(tmp_path / "x.gguf"), *FAST])
    assert isinstance(result.exception, LmforgeError) and "int3" in str(result.exception)
    assert not (tmp_path / "x").exists()  # refused before quantizing


def test_export_cli_writes_any_model_with_fallbacks_named(tiny_folder, tmp_path):
    runner = CliRunner()
    path = tmp_path / "m.gguf"
    result = runner.invoke(app, ["export", str(tiny_folder), "--gguf", "Q4_K_M", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert "Q4_K -> Q5_0" in result.output  # hidden 64: no row divides into Q4_K's 256
    tensors = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert tensors["blk.0.attn_q.weight"] == "Q5_0" and tensors["blk.0.attn_norm.weight"] == "F32"

    gptq, corpus = tmp_path / "g.gguf", tmp_path / "calib.txt"
    corpus.write_text((TEXT + " ") * 40)
    result = runner.invoke(app, ["export", str(tiny_folder), "--gguf", "Q8_0", "-o", str(gptq), "--method", "gptq",
                                 "--calib", str(corpus), "--calib-samples", "2", "--seqlen", "32"])
    assert result.exit_code == 0, result.output
    tokens = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(load_model(gptq)[0], tokens), logits(load_model(tiny_folder)[0], tokens), rtol=0, atol=2e-2)


def test_a_quantized_model_is_written_in_its_own_type_only(tiny, tmp_path):
    model, tokenizer = quantized_copy(tiny, SCHEMES["Q4_0"])
    with pytest.raises(LmforgeError, match="holds Q4_0 codes, so its GGUF is Q4_0, not Q4_K_M"):
        export_gguf(model, tokenizer, tmp_path / "m.gguf", "Q4_K_M")
    with pytest.raises(LmforgeError, match="unknown GGUF type 'Q3_X'"):
        export_gguf(tiny[0], tiny[1], tmp_path / "m.gguf", "Q3_X")
    assert not (tmp_path / "m.gguf").exists()


def test_full_precision_files_embed_tokenizer_and_chat_template(tiny, tmp_path):
    model, tokenizer = tiny
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    for recipe, dtype in (("F32", "float32"), ("F16", "float16"), ("BF16", "uint8")):
        path = export_gguf(model, tokenizer, tmp_path / f"{recipe}.gguf", recipe).path
        reader = gguf.GGUFReader(path)
        assert reader.get_field("tokenizer.chat_template").contents() == tokenizer.chat_template
        assert reader.get_field("general.file_type").contents() == getattr(gguf.LlamaFileType, "ALL_F32" if recipe == "F32" else f"MOSTLY_{recipe}")
        tensors = {t.name: t for t in reader.tensors}
        assert tensors["blk.0.ffn_up.weight"].tensor_type.name == recipe and str(tensors["blk.0.ffn_up.weight"].data.dtype) == dtype
        loaded, loaded_tokenizer = load_model(path)
        assert loaded_tokenizer.encode(TEXT) == tokenizer.encode(TEXT)
        assert loaded_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<|user|>hi\n"
