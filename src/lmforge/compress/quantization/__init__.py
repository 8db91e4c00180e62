"""Weight quantization: configs (RTN, GPTQ, AWQ), the algorithms on tensors, and the model driver."""

from lmforge.compress.quantization.config import AWQ, GPTQ, RTN, QuantConfig
from lmforge.compress.quantization.driver import QuantReport, is_quantized, quantize

__all__ = ["AWQ", "GPTQ", "RTN", "QuantConfig", "QuantReport", "is_quantized", "quantize"]
