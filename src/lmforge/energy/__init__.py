"""Energy, CO2 and FLOPs of every run: codecarbon offline, with the method it used."""

from lmforge.energy.flops import inference_flops, peak_flops, training_flops
from lmforge.energy.meter import DEFAULT_COUNTRY, EnergyMeter, country

__all__ = ["DEFAULT_COUNTRY", "EnergyMeter", "country", "inference_flops", "peak_flops", "training_flops"]
