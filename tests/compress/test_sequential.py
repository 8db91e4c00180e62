import torch

from lmforge.compress.sequential import (
    capture_layer_inputs,
    decoder_layers,
    layerwise,
    linear_groups,
    linear_input_stats,
    run_layer,
)
from lmforge.models import tiny_llama


def _calibration(n=5, seqlen=16, vocab=512):
    return torch.randint(0, vocab, (n, seqlen), generator=torch.Generator().manual_seed(1))


def test_layerwise_outputs_match_full_forward():
    model = tiny_llama(layers=3)
    calib = _calibration()
    with torch.no_grad():
        reference = model(calib, output_hidden_states=True).hidden_states
    seen = []

    def check(index, layer, inputs):
        assert layer is decoder_layers(model)[index]
        got = torch.cat(inputs.hidden)
        torch.testing.assert_close(got, reference[index], rtol=1e-5, atol=1e-5)
        seen.append(index)

    layerwise(model, calib, check, batch_size=2)
    assert seen == [0, 1, 2]


def test_linear_groups_follow_shared_inputs():
    model = tiny_llama(layers=1)
    inputs = capture_layer_inputs(model, _calibration(), batch_size=4)
    groups = linear_groups(decoder_layers(model)[0], inputs)
    assert groups == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]
    assert linear_groups(decoder_layers(model)[0], inputs, true_sequential=False) == [sum(groups, [])]


def test_linear_input_stats_equal_direct_computation():
    model = tiny_llama(layers=1)
    layer = decoder_layers(model)[0]
    inputs = capture_layer_inputs(model, _calibration(), batch_size=2)  # 3 uneven batches
    captured = []
    handle = layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0].reshape(-1, a[0].shape[-1])))
    run_layer(layer, inputs)
    handle.remove()
    x = torch.cat(captured).double()
    both = linear_input_stats(layer, inputs, ["mlp.down_proj", "self_attn.q_proj", "self_attn.k_proj"])
    assert both["self_attn.k_proj"] is both["self_attn.q_proj"]  # one input tensor: accumulated once, shared
    assert both["self_attn.q_proj"].n == 5 * 16
    stats = both["mlp.down_proj"]
    assert stats.n == x.shape[0] == 5 * 16
    torch.testing.assert_close(stats.hessian.double(), 2 * x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.sq_norm.double(), x.square().sum(0), rtol=1e-4, atol=1e-6)  # H's diagonal
    plain = linear_input_stats(layer, inputs, ["mlp.down_proj"], hessian=False)["mlp.down_proj"]
    assert plain.hessian is None and plain.n == x.shape[0]
    torch.testing.assert_close(plain.sq_norm.double(), x.square().sum(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain.abs_mean.double(), x.abs().mean(0), rtol=1e-5, atol=1e-7)


def test_sink_weighted_hessian_is_the_reweighted_sum_over_tokens():
    model = tiny_llama(layers=1)
    layer = decoder_layers(model)[0]
    inputs = capture_layer_inputs(model, _calibration(), batch_size=2)
    captured = []
    handle = layer.self_attn.q_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    run_layer(layer, inputs)
    handle.remove()
    x = torch.cat(captured).double()  # [5, 16, width]
    stats = linear_input_stats(layer, inputs, ["self_attn.q_proj"])["self_attn.q_proj"]
    first, rest = x[:, 0], x[:, 1:].reshape(-1, x.shape[-1])
    torch.testing.assert_close(stats.sink_hessian.double(), 2 * first.T @ first / 80, rtol=1e-4, atol=1e-6)
    assert stats.sink_weighted_hessian(0.0) is stats.hessian
    # brute force: weight w on the first tokens such that they hold 30 % of the trace
    f, r = float(first.square().sum()), float(rest.square().sum())
    w = 0.3 * r / (0.7 * f)
    expected = 2 * (w * first.T @ first + rest.T @ rest) / 80
    got = stats.sink_weighted_hessian(0.3).double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert abs(float(torch.trace(2 * w * first.T @ first / 80) / torch.trace(got)) - 0.3) < 1e-6
    # a share the first tokens already hold leaves the Hessian as it is
    assert stats.sink_weighted_hessian(f / (f + r) / 2) is stats.hessian
