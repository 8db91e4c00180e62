import time

import pytest
import torch

from lmforge.energy import EnergyMeter, inference_flops, peak_flops, training_flops


def _busy(seconds: float) -> None:
    a = torch.randn(256, 256)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a


def test_meter_reports_energy_method_and_country_without_writing_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMFORGE_COUNTRY", "fra")
    meter = EnergyMeter(run_id="test")
    started = time.perf_counter()
    meter.start()
    assert time.perf_counter() - started < 0.2  # codecarbon's setup runs off the caller's thread
    _busy(0.5)
    result = meter.stop()
    assert result["energy_kwh"] > 0 and result["co2_kg"] > 0
    assert result["country"] == "FRA"
    assert "cpu:" in result["method"]
    assert 0.5 <= result["duration_s"] < 5 and 0 < result["measured_s"] <= result["duration_s"] + 0.1
    # the CO2 is the energy times the grid intensity of the country (France's grid is low-carbon)
    assert result["co2_kg"] == pytest.approx(result["energy_kwh"] * result["carbon_intensity_g_per_kwh"] / 1000)
    assert result["carbon_intensity_g_per_kwh"] < 200
    assert list(tmp_path.iterdir()) == []


def test_meter_never_raises(monkeypatch):
    import codecarbon

    def broken(*args, **kwargs):
        raise RuntimeError("no sensors")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", broken)
    meter = EnergyMeter()
    meter.start()
    result = meter.stop()
    assert result["method"] == "unavailable" and "no sensors" in result["reason"]
    assert EnergyMeter().stop()["method"] == "unavailable"


def test_unknown_country_is_named_in_the_result(monkeypatch):
    meter = EnergyMeter(country_iso_code="XYZ")
    meter.start()
    result = meter.stop()
    assert "XYZ" in result["note"]


def test_training_flops_match_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from lmforge.models import tiny_llama

    layers, width, seq, batch = 2, 64, 32, 2
    model = tiny_llama(vocab_size=300, hidden_size=width, layers=layers, heads=4, kv_heads=4,
                       intermediate_size=128, context_length=seq).train()
    model.set_attn_implementation("eager")  # the flop counter sees eager attention's matmuls
    ids = torch.randint(0, 300, (batch, seq))
    counter = FlopCounterMode(display=False)
    with counter:
        model(ids, labels=ids).loss.backward()
    # matmul parameters: everything but the embedding lookup and the norm gains
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    expected = training_flops(matmul_params, batch * seq, n_layers=layers, d_model=width, seq_len=seq)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.02)
    assert inference_flops(1e6, 10) == 2e7 and training_flops(1e6, 10) == 6e7


def test_cpu_peak_is_measured_and_plausible():
    peak, source = peak_flops("cpu")
    assert 1e8 < peak < 1e14 and "measured" in source
