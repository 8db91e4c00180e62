"""Which engine runs the forward: torch (any model lmforge loads) or llama.cpp in process (GGUF files).

``--engine auto`` picks llama.cpp for a .gguf file when llama-cpp-python is installed, torch otherwise;
asking for llama.cpp without it, or for a model that is not a GGUF file, is a one-line error. Either way the
server around the forward (keys, limits, filters, PII redaction, usage log, batching, sampling) is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.serve.llama_cpp_runner import INSTALL_HINT, LlamaCppRunner, llama_cpp_version

ENGINES = ("auto", "torch", "llama.cpp")


@dataclass
class Engine:
    name: str  # 'torch' or 'llama.cpp'
    model: object  # what the server reads config / generation_config from
    tokenizer: object
    runner: object | None  # None: the server builds its torch ModelRunner
    description: str  # for the startup line and `models info`


def choose_engine(model: str, engine: str = "auto") -> str:
    """'torch' or 'llama.cpp' for ``model`` (one-line errors for a mismatch or a missing llama-cpp-python)."""
    from lmforge.models import resolve_source

    if engine not in ENGINES:
        raise LmforgeError(f"unknown engine '{engine}'; use {' | '.join(ENGINES)}")
    kind, _ = resolve_source(model)
    if engine == "auto":
        return "llama.cpp" if kind == "gguf" and llama_cpp_version() else "torch"
    if engine == "llama.cpp":
        if kind != "gguf":
            raise LmforgeError(f"--engine llama.cpp runs .gguf files and {model} is a {kind} model; pass a .gguf "
                               "(`lmforge export --format gguf` writes one) or use --engine torch")
        if llama_cpp_version() is None:
            raise LmforgeError(f"--engine llama.cpp needs llama-cpp-python, which is not installed: {INSTALL_HINT}")
    return engine


def gguf_tokenizer(path: str | Path):
    """The GGUF's own vocabulary through transformers (no weights loaded), so ids are llama.cpp's."""
    from transformers import AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_engine(model: str, engine: str = "auto", *, max_concurrent: int = 8, threads: int | None = None,
                context: int | None = None, trust_remote_code: bool = False, dtype: str | None = None,
                device: str | None = None) -> Engine:
    name = choose_engine(model, engine)
    if name == "llama.cpp":
        runner = LlamaCppRunner(model, n_seq_max=max_concurrent, context=context, threads=threads)
        description = (f"llama.cpp (llama-cpp-python {llama_cpp_version()}, {runner.threads} threads, "
                       f"{runner.n_seq_max} sequences × {runner.context} tokens)")
        return Engine(name, runner, gguf_tokenizer(model), runner, description)
    from lmforge.models import load_model

    loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    import torch

    return Engine(name, loaded, tokenizer, None, f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
