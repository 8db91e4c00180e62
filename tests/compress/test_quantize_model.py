import copy

import pytest
import torch

from lmforge.compress import AWQ, GPTQ, RTN, QuantLinear, quantize, save_quantized
from lmforge.compress.quantization.rtn import rtn
from lmforge.errors import LmforgeError
from lmforge.models import load_model, tensor_bytes, tiny_llama, tiny_model_and_tokenizer, tiny_tokenizer


@pytest.fixture(scope="module")
def base():
    return tiny_llama(layers=2, hidden_size=128, intermediate_size=256, vocab_size=512)


def tokens(n, seqlen, seed):
    return torch.randint(0, 512, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def logits_error(model, reference, test):
    with torch.no_grad():
        return float((model(test).logits - reference).norm() / reference.norm())


def test_rtn_swaps_every_linear_but_lm_head_and_shrinks_memory(base):
    model = copy.deepcopy(base)
    before = sum(tensor_bytes(model).values())
    report = quantize(model, RTN(bits=4, group_size=32))
    layer = model.model.layers[1].mlp.down_proj
    assert isinstance(layer, QuantLinear) and not isinstance(model.lm_head, QuantLinear)
    assert report.skipped == {"lm_head": "skip list"} and len(report.quantized) == 14
    codes, scale, zero = rtn(base.model.layers[1].mlp.down_proj.weight, 4, 32, True)
    assert torch.equal(layer.codes(), codes)
    linear_bytes = sum(m.weight.numel() * 4 for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
    saved = before - sum(tensor_bytes(model).values())
    assert saved > 0.8 * linear_bytes  # 4-bit codes + scales instead of float32


def with_outlier_channels(model, channels=4, factor=30.0):
    """A copy whose norms make a few hidden channels carry activations ``factor`` times larger than the rest: the
    structure AWQ exists for (a random model has no salient channels, so there AWQ has nothing to protect)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[:channels] *= factor
    return model


def norm_output(model, tokens):
    """The first layer's input_layernorm output on ``tokens`` ([tokens, hidden]): the input of q/k/v_proj."""
    captured = []
    handle = model.model.layers[0].input_layernorm.register_forward_hook(lambda m, i, out: captured.append(out))
    with torch.no_grad():
        model(tokens)
    handle.remove()
    return captured[0].reshape(-1, captured[0].shape[-1])


def test_gptq_and_awq_beat_rtn_on_held_out_tokens(base):
    outliers = with_outlier_channels(base)
    calibration, test = tokens(8, 64, 0), tokens(4, 64, 1)
    errors = {}
    for config in (RTN(bits=3, group_size=32), GPTQ(bits=3, group_size=32), AWQ(bits=3, group_size=32, grid=10)):
        for name, original in (("random", base), ("outliers", outliers)):
            with torch.no_grad():
                reference = original(test).logits
            model = copy.deepcopy(original)
            report = quantize(model, config, calibration)
            assert len(report.quantized) == 14
            errors[config.method, name] = logits_error(model, reference, test)
    assert errors["gptq", "random"] < errors["rtn", "random"], errors
    assert errors["gptq", "outliers"] < errors["rtn", "outliers"], errors
    assert errors["awq", "outliers"] < 0.95 * errors["rtn", "outliers"], errors  # measured: 0.58 vs 0.65


def test_awq_lowers_its_calibration_objective_below_rtn(base):
    """AWQ minimises ‖X Wᵀ − (X/s) Q(W·s)ᵀ‖² over α (α = 0 is RTN). Recompute both sides by hand from the
    quantized modules: the RTN model's codes, and the AWQ model's codes with s read back from the folded norm."""
    original = with_outlier_channels(base)
    calibration = tokens(8, 64, 0)
    x = norm_output(original, calibration)
    names = ("q_proj", "k_proj", "v_proj")  # the group sharing the norm's output; AWQ scores them together
    targets = [x @ getattr(original.model.layers[0].self_attn, n).weight.detach().T for n in names]

    def objective(model, x_seen):
        attention = model.model.layers[0].self_attn
        errors = [(x_seen @ getattr(attention, n).dequantize().T - t).square().sum() for n, t in zip(names, targets)]
        return float(sum(errors) / sum(t.square().sum() for t in targets))

    rtn_model, awq_model = copy.deepcopy(original), copy.deepcopy(original)
    quantize(rtn_model, RTN(bits=3, group_size=32))
    report = quantize(awq_model, AWQ(bits=3, group_size=32, grid=10), calibration)
    entry = report.quantized["model.layers.0.self_attn.q_proj"]
    assert entry["folded"] and entry["alpha"] > 0
    with torch.no_grad():
        s = original.model.layers[0].input_layernorm.weight / awq_model.model.layers[0].input_layernorm.weight
        rtn_error, awq_error = objective(rtn_model, x), objective(awq_model, x / s)
    assert entry["calib_error_rtn"] == pytest.approx(rtn_error, rel=1e-3)
    assert entry["calib_error"] == pytest.approx(awq_error, rel=1e-3)
    assert awq_error < 0.8 * rtn_error, (awq_error, rtn_error)  # measured: 0.026 vs 0.044 (the three q/k/v together)


def test_bad_inputs_give_clear_errors(base):
    model = copy.deepcopy(base)
    with pytest.raises(LmforgeError, match=r"group size 48 does not divide the input width 128 of model\.layers\.0\.self_attn\.q_proj; sizes that work: 8, 16, 32, 64, 128"):
        quantize(model, RTN(bits=4, group_size=48))
    with pytest.raises(LmforgeError, match="needs calibration data"):
        quantize(model, GPTQ(bits=4, group_size=32))
    with pytest.raises(LmforgeError, match="bits=5"):
        RTN(bits=5)
    report = quantize(model, RTN(bits=4, group_size=256, skip_bad_groups=True))
    assert list(report.quantized) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert report.skipped["model.layers.0.self_attn.q_proj"] == "group size 256 does not divide its width 128"
    with pytest.raises(LmforgeError, match="already quantized"):
        quantize(model, RTN(bits=4, group_size=32))


def test_save_and_reload_without_requantizing(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(layers=2, hidden_size=64, tie_word_embeddings=True)
    test = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    calibration = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(1))
    report = quantize(model, AWQ(bits=4, group_size=32, grid=4), calibration)
    with torch.no_grad():
        expected = model(test).logits
    save_quantized(model, tokenizer, tmp_path / "q", report.to_dict())
    reloaded, _ = load_model(tmp_path / "q")
    assert isinstance(reloaded.model.layers[0].mlp.up_proj, QuantLinear)
    assert reloaded.model.layers[0].mlp.up_proj.qweight.dtype == torch.uint8
    with torch.no_grad():
        torch.testing.assert_close(reloaded(test).logits, expected, rtol=0, atol=0)


def test_lm_head_bits_quantizes_a_tied_head_and_keeps_the_embeddings(tmp_path):
    from lmforge.compress.storage.serialize import load_quantized_model

    model = tiny_llama(layers=2, hidden_size=128, intermediate_size=256, vocab_size=512, tie_word_embeddings=True)
    embeddings = model.model.embed_tokens.weight.detach().clone()
    report = quantize(model, RTN(bits=4, group_size=32, lm_head_bits=8))
    head = model.lm_head
    assert isinstance(head, QuantLinear) and head.bits == 8 and "lm_head" not in report.skipped
    assert report.quantized["lm_head"] == {"method": "rtn", "bits": 8, "group_size": None}
    assert torch.equal(model.model.embed_tokens.weight, embeddings)  # lookups stay exact
    codes, scale, zero = rtn(embeddings, 8, None, True)
    assert torch.equal(head.codes(), codes)
    test = tokens(2, 16, 3)
    with torch.no_grad():
        hidden = model.model(test).last_hidden_state
        logits = model(test).logits
    dequantized = (codes.float() - zero.float()) * scale
    torch.testing.assert_close(logits, hidden @ dequantized.T, rtol=1e-4, atol=1e-4)
    save_quantized(model, tiny_tokenizer(), tmp_path / "q", report.to_dict())
    reloaded = load_quantized_model(tmp_path / "q")
    assert isinstance(reloaded.lm_head, QuantLinear)
    assert torch.equal(reloaded.model.embed_tokens.weight, embeddings)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(test).logits, logits)
    with pytest.raises(LmforgeError, match="lm_head_bits=5"):
        RTN(bits=4, lm_head_bits=5)
    # down_proj (width 192) takes groups of 48, the head (width 128) does not: refused before anything changes
    untouched = tiny_llama(layers=1, hidden_size=128, intermediate_size=192, vocab_size=512, tie_word_embeddings=True)
    with pytest.raises(LmforgeError, match="group size 48 does not divide the output head's width 128"):
        quantize(untouched, RTN(bits=4, group_size=48, skip_bad_groups=True, lm_head_bits=4))
    assert not any(isinstance(m, QuantLinear) for m in untouched.modules())


@pytest.mark.parametrize("head_bits", [8, 4])
def test_shared_embeddings_read_the_quantized_head_and_survive_save_and_reload(tmp_path, head_bits):
    from lmforge.compress.export.compressed_tensors import export_compressed_tensors
    from lmforge.compress.storage.qlinear import QuantEmbedding
    from lmforge.compress.storage.serialize import load_quantized_model
    from lmforge.compress.storage.sparse import storage_bytes

    model = tiny_llama(layers=2, hidden_size=128, intermediate_size=256, vocab_size=512, tie_word_embeddings=True)
    embeddings = model.model.embed_tokens.weight.detach().clone()
    separate = copy.deepcopy(model)
    quantize(separate, RTN(bits=4, group_size=32, lm_head_bits=head_bits))
    report = quantize(model, RTN(bits=4, group_size=32, lm_head_bits=head_bits, share_embeddings=True))
    assert isinstance(model.model.embed_tokens, QuantEmbedding) and report.quantized["model.embed_tokens"]
    # row t of the lookup is row t of the brute-force RTN of the embedding matrix, dequantized
    codes, scale, zero = rtn(embeddings, head_bits, None if head_bits == 8 else 32, True)
    dequantized = (codes.float() - zero.float().repeat_interleave(codes.shape[1] // zero.shape[1], 1)) * \
        scale.repeat_interleave(codes.shape[1] // scale.shape[1], 1)
    test = tokens(2, 16, 3)
    torch.testing.assert_close(model.model.embed_tokens(test), dequantized[test])
    # one table: the fp32 embeddings are gone from what is stored
    assert storage_bytes(separate) - storage_bytes(model) == embeddings.numel() * 4
    with torch.no_grad():
        logits = model(test).logits
        torch.testing.assert_close(model.model(test).last_hidden_state @ dequantized.T, logits, rtol=1e-4, atol=1e-4)
    save_quantized(model, tiny_tokenizer(), tmp_path / "q", report.to_dict())
    reloaded = load_quantized_model(tmp_path / "q")
    assert isinstance(reloaded.model.embed_tokens, QuantEmbedding) and reloaded.model.embed_tokens.head is reloaded.lm_head
    with torch.no_grad():
        torch.testing.assert_close(reloaded(test).logits, logits, rtol=0, atol=0)
        generated = reloaded.generate(test[:1, :4], max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 7)
    copied = copy.deepcopy(reloaded)
    assert copied.model.embed_tokens.head is copied.lm_head
    with pytest.raises(LmforgeError, match="share_embeddings"):
        export_compressed_tensors(reloaded, tiny_tokenizer(), tmp_path / "ct")


def test_shared_embeddings_need_a_quantized_tied_head():
    with pytest.raises(LmforgeError, match="set lm_head_bits"):
        RTN(bits=4, share_embeddings=True)
    untied = tiny_llama(layers=1, hidden_size=64, intermediate_size=128, vocab_size=512, tie_word_embeddings=False)
    with pytest.raises(LmforgeError, match="separate"):
        quantize(untied, RTN(bits=4, group_size=32, lm_head_bits=8, share_embeddings=True))
    assert not any(isinstance(m, QuantLinear) for m in untied.modules())
