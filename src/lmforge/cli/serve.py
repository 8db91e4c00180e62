"""`lmforge serve MODEL`: an OpenAI-compatible server with guardrails and a usage log."""

from __future__ import annotations

import typer

from lmforge.cli.common import check_outputs, console, device_option, dtype_option


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    model: str = typer.Argument(..., help="zoo name, HF folder (lmforge-compressed ones too), .gguf file or hub id"),
    host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback requires --api-key"),
    port: int = typer.Option(8000, help="TCP port (1-65535)"),
    api_key: list[str] = typer.Option(None, "--api-key", help="accepted bearer key (repeat for several); "
                                      "visible to ps: prefer --api-key-file or LMFORGE_API_KEYS=k1,k2"),
    api_key_file: str = typer.Option(None, help="file of accepted keys, one a line"),
    name: str = typer.Option(None, help="model id clients send (default: MODEL)"),
    rate: float = typer.Option(120.0, help="requests per minute per key"),
    burst: int = typer.Option(None, help="requests a key may send at once (default: one minute's worth)"),
    max_request_bytes: int = typer.Option(64 * 1024, help="larger request bodies get 413"),
    max_tokens_limit: int = typer.Option(512, help="largest max_tokens a request may ask for"),
    filter_path: str = typer.Option(None, "--filter", help="content-filter rule file (YAML; default: shipped rules)"),
    no_filter: bool = typer.Option(False, "--no-filter", help="turn the content filter off"),
    no_redact: bool = typer.Option(False, "--no-redact", help="turn PII redaction of outputs off"),
    usage_log: str = typer.Option(None, help="JSONL usage log (default: usage.jsonl beside the run store; "
                                  "'off' turns it off)"),
    log_text: bool = typer.Option(False, help="also keep prompts and completions in the usage log"),
    max_concurrent: int = typer.Option(8, help="sequences decoded together (continuous batching)"),
    max_queued: int = typer.Option(64, help="sequences waiting for a slot; beyond that 503 + Retry-After"),
    max_batch_tokens: int = typer.Option(None, help="bound on running sequences × their longest length (KV memory)"),
    engine: str = typer.Option("auto", help="auto (llama.cpp for a .gguf when installed) | torch | llama.cpp"),
    threads: int = typer.Option(None, help="CPU threads of the forward (default: torch's thread count)"),
    trust_remote_code: bool = typer.Option(False, help="run the model's own code (only for authors you trust)"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Serve MODEL on /v1/completions, /v1/chat/completions (streaming too) and /v1/models."""
    from lmforge.runs import record_run
    from lmforge.serve import ServeConfig, api_keys_from, check_bind, check_port, choose_engine, serve

    from lmforge.paths import home_dir

    usage_log = None if usage_log == "off" else (usage_log or str(home_dir() / "usage.jsonl"))
    keys = api_keys_from(api_key, api_key_file)
    config = ServeConfig(
        model_name=name or model, api_keys=keys, rate_per_minute=rate, rate_burst=burst,
        max_request_bytes=max_request_bytes, max_tokens_limit=max_tokens_limit, content_filter=not no_filter,
        filter_path=filter_path, redact_pii=not no_redact, usage_log=usage_log, log_text=log_text,
        max_concurrent=max_concurrent, max_queued=max_queued, max_batch_tokens=max_batch_tokens,
    )
    config.check()
    check_port(port)
    check_bind(host, keys)
    check_outputs(files=[usage_log])
    chosen = choose_engine(model, engine)
    recorded = {k: v for k, v in config.__dict__.items() if k != "api_keys"} | {"api_keys": len(keys), "host": host,
                                                                               "port": port, "dtype": dtype, "device": device,
                                                                               "engine": chosen, "threads": threads}
    with record_run("serve", config=recorded, inputs={"model": model}, measure_energy=False) as run:
        if config.usage_log:
            run.add_artifact("usage_log", config.usage_log)
        serve(model, host=host, port=port, config=config, trust_remote_code=trust_remote_code, progress=console.print,
              dtype=dtype, device=device, engine=engine, threads=threads)
