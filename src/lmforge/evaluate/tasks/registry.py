"""Finding tasks by name: the shipped task files and any ``--include-path`` folders (as lm-eval's TaskManager does)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import yaml

from lmforge.errors import LmforgeError
from lmforge.evaluate.tasks.config import SHIPPED, GroupConfig, TaskConfig, parse, read_yaml


def builtin_folder() -> Path:
    return SHIPPED


def _names_in(path: Path) -> list[str]:
    """The task or group name a YAML file defines, read cheaply (no includes, !function tags ignored)."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except (yaml.YAMLError, UnicodeDecodeError):
        return []
    if not isinstance(raw, dict):
        return []
    if isinstance(raw.get("group"), str) and isinstance(raw.get("task"), list):
        return [raw["group"]]
    return [raw["task"]] if isinstance(raw.get("task"), str) else []


def task_index(include_paths: Sequence[str | Path] = ()) -> dict[str, Path]:
    """name -> YAML file, over the shipped tasks, then each include path (a later folder's name wins, as in lm-eval)."""
    return dict(_index(tuple(str(Path(p).resolve()) for p in include_paths)))


@functools.lru_cache(maxsize=8)  # a group resolves each member by name: read the folders once per process
def _index(include_paths: tuple[str, ...]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for folder in (builtin_folder(), *map(Path, include_paths)):
        if not Path(folder).is_dir():
            raise LmforgeError(f"--include-path {folder} is not a folder")
        for path in sorted(Path(folder).rglob("*.yaml")):
            for name in _names_in(path):
                index[name] = path
    return index


def resolve(name_or_path: str | Path, include_paths: Sequence[str | Path] = ()) -> TaskConfig | GroupConfig:
    """A task or group by name (shipped or under an include path) or by YAML path."""
    index = task_index(include_paths)
    if str(name_or_path) in index:
        path = index[str(name_or_path)]
        return parse(read_yaml(path), path)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return parse(read_yaml(path), path.resolve())
    raise LmforgeError(f"unknown task '{name_or_path}'; shipped and included tasks: {', '.join(sorted(index)[:20])}"
                       f"{' …' if len(index) > 20 else ''} (or give a task .yaml path)")


def expand(config: TaskConfig | GroupConfig, include_paths: Sequence[str | Path] = ()) -> list[TaskConfig]:
    """The tasks a config stands for: itself, or a group's members (recursively)."""
    if isinstance(config, TaskConfig):
        return [config]
    return [task for member in config.tasks for task in expand(resolve(member, include_paths), include_paths)]


def is_task_file(name: str, include_paths: Sequence[str | Path] = ()) -> bool:
    """Whether ``name`` is an lm-eval task or group (shipped, included, or a YAML file with a task/group key)."""
    if name in task_index(include_paths):
        return True
    path = Path(name)
    return path.suffix in (".yaml", ".yml") and path.is_file() and bool(_names_in(path))
