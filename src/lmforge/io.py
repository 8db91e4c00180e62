"""Atomic file writes and output folders that never replace what lmforge did not write.

A killed command never leaves half a file behind; a folder is replaced only when it holds an lmforge artifact of
the same kind (a marker file says which) and the caller asked for it (``overwrite``, the CLI's ``--overwrite``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from lmforge.errors import LmforgeError

ARTIFACT_FILE = ".lmforge-artifact.json"  # {"kind": "model"}: written into every folder lmforge writes
_LEGACY_MODEL_FILE = "lmforge.json"  # model folders of lmforge versions before the marker
_REPLACEABLE: set[Path] = set()  # folders the user allowed replacing (check_output_dir with overwrite) in this process


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the ``.NAME.<pid>.*.tmp`` files and folders beside ``path`` left by processes that died mid-write."""
    path = Path(path)
    # tempfile's names: our prefix, 8 random characters, our suffix (nothing else, so `.q.5.*` of a folder `q.5` is safe)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]{{8}}(\.old)?\.tmp$")
    removed = []
    with contextlib.suppress(OSError):
        for sibling in path.parent.iterdir():
            match = pattern.match(sibling.name)
            if match and not pid_alive(int(match.group(1))):
                if sibling.is_dir() and not sibling.is_symlink():
                    shutil.rmtree(sibling, ignore_errors=True)
                else:
                    sibling.unlink(missing_ok=True)
                removed.append(sibling)
    return removed


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the permissions a plain ``open`` would give it (mkstemp's are 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            tmp_path.chmod(0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def artifact_kind(folder: str | os.PathLike) -> str | None:
    """The kind of lmforge artifact ``folder`` holds (its marker file), or None when lmforge did not write it."""
    folder = Path(folder)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((folder / ARTIFACT_FILE).read_text(encoding="utf-8"))["kind"]
    if (folder / _LEGACY_MODEL_FILE).is_file() and (folder / "config.json").is_file():
        return "model"
    if (folder / "model" / _LEGACY_MODEL_FILE).is_file() or any((folder / "checkpoints").glob("step-*")):
        return "training run"  # `lmforge train -o` of a version before the marker
    return None


def mark_artifact(folder: str | os.PathLike, kind: str) -> None:
    """Write the marker that lets a later ``--overwrite`` replace this folder."""
    (Path(folder) / ARTIFACT_FILE).write_text(json.dumps({"kind": kind, "writer": "lmforge"}) + "\n", encoding="utf-8")


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _protected(path: Path, inputs: Iterable[str | os.PathLike]) -> str | None:
    """Why ``path`` may never be replaced, or None."""
    from lmforge.paths import home_dir

    cwd = Path.cwd().resolve()
    if _within(cwd, path):
        return "it is the working directory or a folder above it"
    home = home_dir().resolve()
    if _within(home, path):
        return f"it holds the run store ({home})"
    for item in inputs:
        if item and Path(item).exists() and _within(Path(item).resolve(), path):
            return f"it is or holds the input {item}"
    return None


def refuse_protected(path: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """A one-line error if ``path`` is a folder no command may replace (see ``check_output_dir``)."""
    if why := _protected(Path(path).resolve(), inputs):
        raise LmforgeError(f"refusing to write the {kind} into {path}: {why}; choose a new folder, e.g. {Path(path) / 'out'}")


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, in one line, if ``path`` (a file or folder to be written later) cannot be written."""
    path = Path(path)
    if path.is_dir() and what != "folder":
        raise LmforgeError(f"{what} {path} is a folder; give a file path, e.g. {path / 'result.json'}")
    existing = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    if existing != path and not existing.is_dir():
        raise LmforgeError(f"{what} {path} cannot be written: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
        raise LmforgeError(f"{what} {path} cannot be written: no write permission on {existing}; choose another path")
    return path


def check_output_dir(path: str | os.PathLike, kind: str, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that a folder of ``kind`` may be written at ``path``; one-line error if not.

    A new or empty folder is fine; an existing lmforge artifact of the same kind only with ``overwrite`` (which
    then lets this process's ``atomic_dir`` replace it); never anything else, the working directory, a folder above
    it, the run store's folder, or a folder holding an input.
    """
    path = Path(path)
    resolved = path.resolve()
    if path.exists() and not path.is_dir():
        raise LmforgeError(f"{path} is a file, not a folder; choose a folder path for the {kind}")
    refuse_protected(path, kind, inputs)
    if path.is_dir() and any(p.name != ARTIFACT_FILE for p in path.iterdir()):
        there = artifact_kind(path)
        if there != kind:
            held = f"an lmforge {there}" if there else "files lmforge did not write"
            raise LmforgeError(f"{path} already exists and holds {held}; choose a new folder (nothing there was changed)")
        if not overwrite:
            raise LmforgeError(f"{path} already holds an lmforge {kind}; pass --overwrite to replace it, or choose a new folder")
        _REPLACEABLE.add(resolved)
    check_writable(path, "folder")
    return path


def check_outputs(folder: str | Path | None = None, kind: str = "model", overwrite: bool = False,
                  files: Sequence[str | Path | None] = (), inputs: Sequence[Any] = ()) -> None:
    """Before any work: the output folder may be written (see ``io.check_output_dir``) and so may each file."""
    if folder:
        check_output_dir(folder, kind, overwrite, inputs=[i for i in inputs if isinstance(i, (str, Path))])
    for file in files:
        if file:
            check_writable(file, "output file")


def check_output_file(path: str | os.PathLike, overwrite: bool = False, inputs: Iterable[Any] = ()) -> Path:
    """A file to be written (a .gguf): never an input, an existing one only with ``overwrite``, writable now."""
    path = Path(path)
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and Path(item).exists() and Path(item).resolve() == path.resolve():
            raise LmforgeError(f"{path} is also the input; write the output to another path")
    if path.is_file() and not overwrite:
        raise LmforgeError(f"{path} already exists; pass --overwrite to replace it, or choose another path")
    return check_writable(path, "output file")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str = "folder", overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    The folder is marked as an lmforge ``kind``. An existing ``path`` is replaced only when it is an lmforge
    artifact of the same kind and ``overwrite`` is set (or ``check_output_dir`` allowed it with overwrite).
    """
    path = Path(path)
    if path.exists():
        check_output_dir(path, kind, overwrite or path.resolve() in _REPLACEABLE)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        try:
            yield tmp
        except Exception as exc:
            if not isinstance(exc, (OSError, LmforgeError)) and "I/O error" in str(exc):
                # safetensors' Rust writer reports a full or failing disk as text: make it the OSError it is
                raise OSError(errno.EIO, str(exc).rsplit("I/O error: ", 1)[-1], str(path)) from exc
            raise
        mark_artifact(tmp, kind)
        tmp.chmod(0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old.tmp", dir=path.parent))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return Path(path)


def read_yaml_mapping(path: str | os.PathLike, what: str, hint: str = "") -> dict[str, Any]:
    """A YAML file that must hold a mapping; every problem is a one-line error naming ``what`` and the fix."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"{what} not found: {path}" + (f"; {hint}" if hint else ""))
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise LmforgeError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise LmforgeError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    if not isinstance(values, dict):
        raise LmforgeError(f"{path} must hold a YAML mapping of field: value" + (f"; {hint}" if hint else ""))
    return values
