"""``export_to_gguf``: load any model lmforge can load, calibrate if asked, and write one GGUF file."""

from __future__ import annotations

from typing import Callable

from lmforge.compress.export.gguf import GGUFExport, export_gguf
from lmforge.errors import LmforgeError

METHODS = ("rtn", "gptq")


def export_to_gguf(model_source: str, path: str, recipe: str | None, *, method: str = "rtn", calib: str = "web_articles",
                   calib_samples: int = 128, seqlen: int = 2048, seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> GGUFExport:
    """``recipe``: a GGUF type (``gguf_recipes.RECIPES``); None keeps a quantized model's own type, F32 otherwise.
    ``method="gptq"`` quantizes a full-precision model by GPTQ onto the recipe's block grids, calibrated on
    ``calib_samples`` windows of ``seqlen`` tokens of ``calib``."""
    from lmforge.data import calibration_batches, load_corpus
    from lmforge.models import load_model

    if method not in METHODS:
        raise LmforgeError(f"unknown method '{method}'; use one of: {', '.join(METHODS)}")
    model, tokenizer = load_model(model_source)
    calibration = None
    if method == "gptq":
        if recipe is None or recipe in ("F32", "F16", "BF16"):
            raise LmforgeError("--method gptq needs a quantized GGUF type to calibrate for (e.g. --gguf Q4_K_M)")
        calibration = calibration_batches(tokenizer, load_corpus(calib), calib_samples, seqlen, seed)
    return export_gguf(model, tokenizer, path, recipe, calibration=calibration, progress=progress)
