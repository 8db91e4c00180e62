"""Reading lm-evaluation-harness task YAML files as they are.

A task file is a mapping of lm-eval ``TaskConfig`` keys; ``include:`` pulls in
another file first (relative to the including file) and the including file's
keys win. ``!function module.name`` names a Python function in ``module.py``
beside the file: it is only imported when the caller passes
``trust_task_code`` (it runs arbitrary code). A key lmforge does not implement
is refused by name, so a task never runs with a silent difference.

Data paths: a relative ``dataset_kwargs.data_files`` path is read from the data
folder (``--data-dir``, ``$LMFORGE_DATA_DIR`` or ``../shared/data``). lm-eval
resolves the same relative paths against its working directory, so running it
from the data folder reads the very same files (benchmarks/lmeval_parity.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from lmforge.errors import LmforgeError

OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until")

# Keys that only label or document a task: read and kept, no effect on the numbers.
_DESCRIPTIVE = {"task_alias", "tag", "metadata", "should_decontaminate", "doc_to_decontamination_query", "group_alias"}
TASK_KEYS = {"task", "dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split",
             "test_split", "fewshot_split", "process_docs",
             "doc_to_text", "doc_to_target", "doc_to_choice", "process_results", "description", "target_delimiter",
             "fewshot_delimiter", "fewshot_config", "num_fewshot", "metric_list", "output_type", "generation_kwargs",
             "repeats", "filter_list", *_DESCRIPTIVE}
GROUP_KEYS = {"group", "task", "aggregate_metric_list", *_DESCRIPTIVE}
FEWSHOT_KEYS = {"sampler", "split", "samples", "doc_to_text", "doc_to_target", "doc_to_choice", "fewshot_delimiter",
                "target_delimiter", "process_docs"}
GENERATION_KEYS = {"until", "max_gen_toks", "do_sample", "temperature"}
METRIC_KEYS = {"metric", "aggregation", "higher_is_better", "ignore_case", "ignore_punctuation", "ignore_numbers",
               "regexes_to_ignore", "weight_by_size", "filter_list"}
DATASET_PATHS = ("json", "csv")
SHIPPED = Path(__file__).resolve().parent / "builtin"  # lmforge's own task files: their code is lmforge's code


@dataclass(frozen=True)
class FunctionRef:
    """``!function module.name``: a function in ``module.py`` beside the YAML file (imported only when trusted)."""

    file: Path
    name: str

    def load(self, trust_task_code: bool) -> Callable:
        if not trust_task_code and SHIPPED not in self.file.resolve().parents:
            raise LmforgeError(f"the task uses '!function {self.file.stem}.{self.name}' ({self.file}), which runs Python "
                               "code; pass --trust-task-code if you trust its author")
        if not self.file.is_file():
            raise LmforgeError(f"!function {self.file.stem}.{self.name}: {self.file} does not exist")
        spec = importlib.util.spec_from_file_location(f"lmforge_task_code.{self.file.stem}", self.file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        if not hasattr(module, self.name):
            raise LmforgeError(f"!function {self.file.stem}.{self.name}: {self.file} defines no '{self.name}'")
        return getattr(module, self.name)

    def fingerprint(self) -> str:
        source = self.file.read_bytes() if self.file.is_file() else b""
        return f"{self.file.name}:{self.name}:{hashlib.sha256(source).hexdigest()}"


def _yaml_loader(folder: Path) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def function(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
        module, _, name = loader.construct_scalar(node).rpartition(".")
        return FunctionRef(folder / f"{module.replace('.', '/')}.py", name)

    Loader.add_constructor("!function", function)
    return Loader


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One task file with its ``include:`` chain resolved (included keys first, the file's own keys win)."""
    path = path.resolve()
    if path in _seen:
        raise LmforgeError(f"{path}: include cycle ({' -> '.join(p.name for p in (*_seen, path))})")
    if not path.is_file():
        raise LmforgeError(f"task file {path} does not exist")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader(path.parent)) or {}
    except yaml.YAMLError as exc:
        raise LmforgeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError as exc:
        raise LmforgeError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not isinstance(raw, dict):
        raise LmforgeError(f"{path}: a task file must be a mapping of lm-eval task keys")
    if include := raw.pop("include", None):
        included = Path(include) if Path(include).is_absolute() else path.parent / include
        return {**read_yaml(included, (*_seen, path)), **raw}
    return raw


def _refuse_unknown(where: str, given: dict[str, Any], known: set[str]) -> None:
    if unknown := sorted(set(given) - known):
        raise LmforgeError(f"{where}: lmforge does not support the task key '{unknown[0]}' "
                           f"(supported: {', '.join(sorted(known))})")


@dataclass
class TaskConfig:
    """The lm-eval TaskConfig keys lmforge implements, with lm-eval's defaults."""

    task: str
    source: Path
    dataset_path: str
    output_type: str = "generate_until"
    dataset_name: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    training_split: str | None = None
    validation_split: str | None = None
    test_split: str | None = None
    fewshot_split: str | None = None
    process_docs: Any = None
    doc_to_text: Any = None
    doc_to_target: Any = None
    doc_to_choice: Any = None
    process_results: Any = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot_config: dict[str, Any] = field(default_factory=dict)
    num_fewshot: int | None = None
    metric_list: list[dict[str, Any]] | None = None
    generation_kwargs: dict[str, Any] | None = None
    filter_list: list[dict[str, Any]] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_split(self) -> str:
        split = self.test_split or self.validation_split
        if split is None:
            raise LmforgeError(f"task {self.task}: set test_split or validation_split")
        return split

    def fingerprint(self) -> str:
        """A hash of everything that defines the task (keys, !function sources); data hashes are added by the runner."""
        def encode(value: Any) -> Any:
            if isinstance(value, FunctionRef):
                return value.fingerprint()
            if isinstance(value, dict):
                return {k: encode(v) for k, v in sorted(value.items())}
            if isinstance(value, list):
                return [encode(v) for v in value]
            return value

        return hashlib.sha256(json.dumps(encode(self.raw), sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class GroupConfig:
    """``group:`` with a list of task names and how their metrics aggregate."""

    group: str
    source: Path
    tasks: list[str]
    aggregate_metric_list: list[dict[str, Any]] = field(default_factory=list)


def parse_task(raw: dict[str, Any], source: Path) -> TaskConfig:
    where = f"{source} (task {raw.get('task', '?')})"
    _refuse_unknown(where, raw, TASK_KEYS)
    if not isinstance(raw.get("task"), str):
        raise LmforgeError(f"{source}: a task file needs 'task: NAME' (or 'group:' with a task list)")
    if raw.get("dataset_path") not in DATASET_PATHS:
        raise LmforgeError(f"{where}: dataset_path '{raw.get('dataset_path')}' is not supported; lmforge reads local "
                           f"files: dataset_path: {' | '.join(DATASET_PATHS)} with dataset_kwargs.data_files")
    if raw.get("output_type", "generate_until") not in OUTPUT_TYPES:
        raise LmforgeError(f"{where}: output_type '{raw['output_type']}' is not one of {', '.join(OUTPUT_TYPES)}")
    if raw.get("repeats", 1) != 1:
        raise LmforgeError(f"{where}: lmforge does not support the task key 'repeats' other than 1 (greedy decoding)")
    fewshot = dict(raw.get("fewshot_config") or {})
    _refuse_unknown(f"{where} fewshot_config", fewshot, FEWSHOT_KEYS)
    if fewshot.get("sampler", "default") not in ("default", "first_n"):
        raise LmforgeError(f"{where}: fewshot_config.sampler '{fewshot['sampler']}' is not supported (default | first_n)")
    generation = raw.get("generation_kwargs")
    if generation is not None:
        _refuse_unknown(f"{where} generation_kwargs", generation, GENERATION_KEYS)
        if generation.get("do_sample") or float(generation.get("temperature", 0.0) or 0.0) > 0:
            raise LmforgeError(f"{where}: lmforge does not support the task key 'generation_kwargs.do_sample' (sampling); "
                               "set do_sample: false")
    for metric in raw.get("metric_list") or []:
        _refuse_unknown(f"{where} metric_list", metric, METRIC_KEYS)
    known = set(TaskConfig.__dataclass_fields__) - {"source", "raw"}
    config = TaskConfig(source=source, raw=raw, **{k: v for k, v in raw.items() if k in known and v is not None})
    config.fewshot_config = fewshot
    if config.output_type == "generate_until":
        generation = dict(generation or {})
        generation.setdefault("until", [config.fewshot_delimiter])  # lm-eval's default stop
        config.generation_kwargs = generation
    return config


def parse(raw: dict[str, Any], source: Path) -> TaskConfig | GroupConfig:
    if "group" in raw and isinstance(raw.get("task"), list):
        _refuse_unknown(f"{source} (group {raw['group']})", raw, GROUP_KEYS)
        for entry in raw["task"]:
            if not isinstance(entry, str):
                raise LmforgeError(f"{source}: group members must be task names (inline task definitions are not supported)")
        for metric in raw.get("aggregate_metric_list") or []:
            _refuse_unknown(f"{source} aggregate_metric_list", metric, METRIC_KEYS)
        return GroupConfig(raw["group"], source, list(raw["task"]), list(raw.get("aggregate_metric_list") or []))
    return parse_task(raw, source)
