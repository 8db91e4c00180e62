"""Serve a model over an OpenAI-compatible HTTP API, with guardrails and a usage log.

    from lmforge.serve import ServeConfig, create_app, serve
    serve("smollm2-135m", config=ServeConfig(api_keys=("secret",), usage_log="usage.jsonl"))
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.serve.app import create_app
from lmforge.serve.config import ServeConfig, check_port
from lmforge.serve.engine import ENGINES, choose_engine, load_engine
from lmforge.serve.guardrails import ContentFilter, OutputGuard, RateLimiter, load_filter
from lmforge.serve.runner import ModelRunner
from lmforge.serve.scheduler import Scheduler
from lmforge.serve.thread import ServerThread

__all__ = [
    "ENGINES",
    "ContentFilter",
    "ModelRunner",
    "OutputGuard",
    "RateLimiter",
    "Scheduler",
    "ServeConfig",
    "ServerThread",
    "api_keys_from",
    "check_bind",
    "check_port",
    "choose_engine",
    "create_app",
    "load_engine",
    "load_filter",
    "serve",
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_keys_from(flags, key_file: str | None, environ=os.environ) -> tuple[str, ...]:
    """The accepted keys: ``--api-key`` flags, then ``--api-key-file`` (one key a line, ``#`` comments), then
    ``LMFORGE_API_KEYS`` (comma-separated) only when neither was given. A file keeps keys off the command line
    (``ps`` shows every argument) and out of shell history."""
    keys = list(flags or ())
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise LmforgeError(f"--api-key-file {key_file}: no such file; write one key per line there")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        found = [line for line in lines if line and not line.startswith("#")]
        if not found:
            raise LmforgeError(f"--api-key-file {key_file} holds no key; write one key per line")
        keys += found
    if not keys:
        keys = [k.strip() for k in environ.get("LMFORGE_API_KEYS", "").split(",") if k.strip()]
    return tuple(keys)


def check_bind(host: str, api_keys) -> None:
    """Only loopback may go without API keys: anything else is reachable by other machines."""
    if not is_loopback(host) and not api_keys:
        raise LmforgeError(f"refusing to serve on {host} without an API key; pass --api-key (or bind 127.0.0.1)")


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
          trust_remote_code: bool = False, progress=print, dtype: str | None = None, device: str | None = None,
          engine: str = "auto", threads: int | None = None) -> None:
    """Load ``model`` (zoo name, HF folder, .gguf, hub id; compressed lmforge folders too) and serve it until stopped.

    ``engine``: 'auto' (llama.cpp for a .gguf when llama-cpp-python is installed), 'torch' or 'llama.cpp'.
    """
    import uvicorn

    config = config or ServeConfig(model_name=str(model))
    config.check()
    check_port(port)
    check_bind(host, config.api_keys)
    choose_engine(model, engine)  # a mismatch fails before anything loads
    loaded = load_engine(model, engine, max_concurrent=config.max_concurrent, threads=threads,
                         trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    if loaded.name == "llama.cpp":
        import torch

        # torch only samples here (argmax, top-k on one row): its thread pool would spin against llama.cpp's threads
        torch.set_num_threads(1)
    progress(f"serving {model} as '{config.model_name}' on http://{host}:{port}/v1 with {loaded.description} "
             f"(API keys: {len(config.api_keys) or 'none'}; Ctrl-C stops)")
    app = create_app(loaded.model, loaded.tokenizer, config, runner=loaded.runner)
    uvicorn.run(app, host=host, port=port, log_level="warning")
