"""A curation pipeline: input, steps, output; run locally over a process pool, resumable, or on Ray.

The steps are cut into stages at each global step (deduplication). A stage runs shard by shard, in
parallel: read (or take the previous stage's survivors), apply the previous global step's decisions, run
the per-document steps, then either compute the next global step's signatures or write the final shard.
Between stages the global step decides once over all shards' signatures. Every unit of work writes its
files atomically and then a completion marker, so a killed run restarts where it stopped and produces the
same output as an uninterrupted one.

Output folder::

    data/shard-00000.jsonl          the curated documents (or .parquet)
    exclusions/03-gopher_quality/shard-00000.jsonl   every dropped document, with step, reason, detail
    stats.json                      per-step documents in/out, drop reasons, timings, counters
    work/                           stage outputs, signatures, decisions, completion markers
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from lmforge.data.curate.base import Document, Drop, GlobalStep, Step, StepStats, build_step
from lmforge.data.curate.readers import Input, ShardReader
from lmforge.errors import LmforgeError
from lmforge.io import artifact_kind, atomic_path, check_output_dir, mark_artifact, refuse_protected, write_json
from lmforge.runs.hashing import content_hash

log = logging.getLogger(__name__)
KIND = "pipeline output"

OUTPUT_FORMATS = ("jsonl", "parquet")
LENGTH_BUCKETS = (0, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600)  # words


@dataclass
class Output:
    dir: str = "curated"
    format: str = "jsonl"
    keep_dropped_text: bool = True

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise LmforgeError(f"output.format '{self.format}' is not one of {', '.join(OUTPUT_FORMATS)}")


def _dataclass_from(cls, section: str, data: Any):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise LmforgeError(f"'{section}' must be a mapping of options")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LmforgeError(f"'{section}' has no option {', '.join(unknown)}; options: {', '.join(sorted(known))}")
    return cls(**data)


@dataclass
class Pipeline:
    input: Input
    steps: list[Step]
    output: Output = field(default_factory=Output)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "Pipeline":
        unknown = sorted(set(config) - {"input", "steps", "output"})
        if unknown:
            raise LmforgeError(f"pipeline has no section {', '.join(unknown)}; sections: input, steps, output")
        steps = config.get("steps") or []
        if not isinstance(steps, list) or not steps:
            raise LmforgeError("pipeline 'steps' must be a non-empty list of step names or `name: {options}` mappings")
        return cls(_dataclass_from(Input, "input", config.get("input")), [build_step(s) for s in steps],
                   _dataclass_from(Output, "output", config.get("output")))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Pipeline":
        from lmforge.io import read_yaml_mapping

        return cls.from_dict(read_yaml_mapping(path, "pipeline file", "a mapping with input, steps and output"))

    def keys(self) -> list[str]:
        """A unique, ordered key per step: '03-gopher_quality' (exclusion folders, stats)."""
        return [f"{i:02d}-{step.name}" for i, step in enumerate(self.steps, start=1)]

    def stages(self) -> list[tuple[list[int], int | None]]:
        """Per stage, the indices of its per-document steps and the index of the global step that ends it."""
        stages, current = [], []
        for i, step in enumerate(self.steps):
            if step.is_global:
                stages.append((current, i))
                current = []
            else:
                current.append(i)
        stages.append((current, None))
        return stages

    def fingerprint(self) -> str:
        config = {"input": vars(self.input), "steps": [(s.name, s.options()) for s in self.steps],
                  "output": vars(self.output)}
        return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run(self, engine: str = "local", workers: int | None = None, overwrite: bool = False,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Run (or resume) the pipeline; returns the statistics also written to ``<output>/stats.json``."""
        if engine not in ENGINES:
            raise LmforgeError(f"unknown engine '{engine}'; use {' or '.join(ENGINES)}")
        return ENGINES[engine](self, workers, overwrite, progress).run()


# ---------------------------------------------------------------- one unit of work

def _write_rows(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
                              "meta": [json.dumps(r["meta"], ensure_ascii=False) for r in rows]})
            pq.write_table(table, tmp)
        else:
            _write_jsonl(tmp, rows)


def _read_stage_docs(path: Path) -> Iterator[Document]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield Document(row["id"], row["text"], row["meta"])


def _doc_row(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "text": doc.text, "meta": doc.meta}


class _ApplyDecisions(Step):
    """Applies a global step's decisions to one shard, so its drops are counted like any other step's."""

    def __init__(self, step: GlobalStep, decisions: dict[int, tuple[str, str]]):
        self.name = step.name
        self._decisions = decisions
        self._position = -1

    def process(self, doc: Document):
        self._position += 1
        return self._decisions.get(self._position)


_SETUP_CACHE: dict[str, list[Step]] = {}


def _ready_steps(pipeline: Pipeline) -> list[Step]:
    """Steps with their models loaded, once per worker process."""
    key = pipeline.fingerprint()
    if key not in _SETUP_CACHE:
        steps = copy.deepcopy(pipeline.steps)
        for step in steps:
            step.setup()
        _SETUP_CACHE[key] = steps
    return _SETUP_CACHE[key]


def run_shard(pipeline: Pipeline, stage: int, shard: int, files: list[str], work: Path) -> dict[str, Any]:
    """Run one stage on one shard; returns the per-step statistics (also written as the completion marker)."""
    steps = _ready_steps(pipeline)
    keys = pipeline.keys()
    doc_steps, global_index = pipeline.stages()[stage]
    drops: dict[str, list[Drop]] = {}
    stats: dict[str, StepStats] = {}
    keep_text = pipeline.output.keep_dropped_text

    if stage == 0:
        reader = ShardReader(pipeline.input)
        docs: Iterable[Document] = reader.documents(files)
    else:
        previous = pipeline.stages()[stage - 1][1]
        decisions = json.loads((work / f"decisions-{stage - 1}.json").read_text())["shards"][shard]
        apply = _ApplyDecisions(steps[previous], {int(k): tuple(v) for k, v in decisions.items()})
        drops[keys[previous]] = []
        docs = apply.run(_read_stage_docs(work / f"stage-{stage - 1}" / f"shard-{shard:05d}.jsonl"),
                         drops[keys[previous]], keep_text)
    for i in doc_steps:
        drops[keys[i]] = []
        docs = steps[i].run(docs, drops[keys[i]], keep_text)
    survivors = list(docs)  # the generators above have now run, so their statistics are complete
    if stage > 0:
        stats[keys[previous]] = apply.stats
    for i in doc_steps:
        stats[keys[i]] = steps[i].stats
    if stage == 0:
        stats["read"] = reader.stats
        drops["read"] = reader.drops

    if global_index is not None:
        step = steps[global_index]
        start = time.perf_counter()
        signatures = np.stack([step.signature(d) for d in survivors]) if survivors else np.empty((0,))
        seconds = time.perf_counter() - start
        stage_dir = work / f"stage-{stage}"
        with atomic_path(stage_dir / f"shard-{shard:05d}.jsonl") as tmp:
            _write_jsonl(tmp, [_doc_row(d) for d in survivors])
        with atomic_path(stage_dir / f"signatures-{shard:05d}.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, signatures)
        write_json(stage_dir / f"ids-{shard:05d}.json", [d.id for d in survivors])
        stats[keys[global_index]] = StepStats(seconds=seconds)
    else:
        out = Path(pipeline.output.dir) / "data" / f"shard-{shard:05d}.{pipeline.output.format}"
        _write_rows(out, [_doc_row(d) for d in survivors], pipeline.output.format)
        lengths = StepStats()
        for doc in survivors:
            words = len(doc.text.split())
            bucket = max(b for b in LENGTH_BUCKETS if b <= words)
            lengths.counters.setdefault("length_words", Counter())[str(bucket)] += 1
            lengths.counters.setdefault("output", Counter())["characters"] += len(doc.text)
        lengths.docs_in = lengths.docs_out = len(survivors)
        stats["write"] = lengths

    for key, dropped in drops.items():
        with atomic_path(Path(pipeline.output.dir) / "exclusions" / key / f"shard-{shard:05d}.jsonl") as tmp:
            _write_jsonl(tmp, [d.to_dict() for d in dropped])
    result = {"stage": stage, "shard": shard, "stats": {k: v.to_dict() for k, v in stats.items()}}
    write_json(work / "done" / f"stage{stage}-shard{shard:05d}.json", result)
    return result


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def decide_stage(pipeline: Pipeline, stage: int, shard_count: int, work: Path) -> dict[str, Any]:
    """The global step that ends ``stage`` decides over every shard's signatures (in shard order)."""
    marker = work / f"decisions-{stage}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    step = pipeline.steps[pipeline.stages()[stage][1]]
    stage_dir = work / f"stage-{stage}"
    ids = [json.loads((stage_dir / f"ids-{s:05d}.json").read_text()) for s in range(shard_count)]
    rows = [np.load(stage_dir / f"signatures-{s:05d}.npy") for s in range(shard_count)]
    start = time.perf_counter()
    step.reset_stats()
    decisions = step.decide(ids, rows)
    stats = step.stats
    stats.seconds = time.perf_counter() - start
    result = {"shards": [{str(k): list(v) for k, v in d.items()} for d in decisions], "stats": stats.to_dict()}
    write_json(marker, result)
    return result


# ---------------------------------------------------------------- local executor

class LocalRun:
    """Stages in order; within a stage, the shards without a completion marker, over a process pool."""

    def __init__(self, pipeline: Pipeline, workers: int | None, overwrite: bool, progress):
        self.pipeline = pipeline
        self.workers = max(1, workers) if workers else self.default_workers()
        self.out = Path(pipeline.output.dir)
        self.work = self.out / "work"
        self.progress = progress or (lambda n=1: None)
        self._prepare(overwrite)

    @staticmethod
    def default_workers() -> int | None:
        return os.cpu_count() or 1

    def _prepare(self, overwrite: bool) -> None:
        """Resume only a run of this pipeline on these very input files (content hashes); start over when an input
        changed; never write into, or delete, a folder that is not a pipeline output, the working directory, the run
        store or a folder holding an input."""
        config_path = self.work / "pipeline.json"
        self.shards = self.pipeline.input.shard_files()
        files = [file for shard in self.shards for file in shard]
        refuse_protected(self.out, KIND, files)
        killed_at_start = self.work.is_dir() and {p.name for p in self.out.iterdir()} == {"work"}
        ours = config_path.exists() or artifact_kind(self.out) == KIND or killed_at_start
        if self.out.exists() and not ours and any(self.out.iterdir()):
            raise LmforgeError(f"{self.out} exists and is not a pipeline output; pick another output.dir "
                               "(nothing there was changed)")
        if ours and artifact_kind(self.out) is None:
            mark_artifact(self.out, KIND)  # written by an lmforge from before the marker
        check_output_dir(self.out, KIND, overwrite=True, inputs=files)
        inputs = {file: content_hash(file) for file in files}
        if config_path.exists() and not overwrite:
            saved = json.loads(config_path.read_text())
            if saved["fingerprint"] != self.pipeline.fingerprint():
                raise LmforgeError(f"{self.out} holds a run of a different pipeline; pick another output.dir or pass --overwrite")
            if saved.get("inputs") != inputs:
                log.warning("the input files changed since %s was written; starting over", self.out)
                overwrite = True
        if overwrite and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        mark_artifact(self.out, KIND)
        write_json(config_path, {"fingerprint": self.pipeline.fingerprint(), "inputs": inputs, "shards": self.shards})

    def run(self) -> dict[str, Any]:
        results: dict[tuple[int, int], dict] = {}
        decisions: dict[int, dict] = {}
        stages = self.pipeline.stages()
        pool = self._start()
        try:
            for stage, (_, global_index) in enumerate(stages):
                pending = []
                for shard, files in enumerate(self.shards):
                    marker = self.work / "done" / f"stage{stage}-shard{shard:05d}.json"
                    if marker.exists():
                        results[stage, shard] = json.loads(marker.read_text())
                        self.progress(1)
                    else:
                        pending.append((shard, files))
                for result in self._map(pool, stage, pending):
                    results[stage, result["shard"]] = result
                    self.progress(1)
                if global_index is not None:
                    decisions[stage] = decide_stage(self.pipeline, stage, len(self.shards), self.work)
        finally:
            self._stop(pool)
        stats = aggregate(self.pipeline, results, decisions)
        write_json(self.out / "stats.json", stats)
        return stats

    def _start(self):
        if self.workers > 1 and len(self.shards) > 1:
            return ProcessPoolExecutor(self.workers, initializer=die_with_parent, initargs=(os.getpid(),))
        return None

    def _stop(self, pool) -> None:
        if pool is not None:
            pool.shutdown()

    def _map(self, pool, stage: int, pending: list[tuple[int, list[str]]]) -> Iterator[dict]:
        if pool is None:
            for shard, files in pending:
                yield run_shard(self.pipeline, stage, shard, files, self.work)
            return
        futures = [pool.submit(run_shard, self.pipeline, stage, shard, files, self.work) for shard, files in pending]
        for future in futures:
            yield future.result()


def die_with_parent(parent: int) -> None:
    """Pool initializer: the worker ends when the process that started it dies, however it dies (SIGKILL too).

    Linux delivers SIGKILL to the worker when its parent exits (prctl PR_SET_PDEATHSIG); everywhere, a watcher
    thread also ends it once its parent is gone (it is then re-parented, so its parent pid changes)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl.restype = ctypes.c_int
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="lmforge-parent-watch", daemon=True).start()


# Engines by ``--engine`` name. Other engines register here from their own modules (ray_engine.py adds "ray" when
# lmforge.data.curate is imported), so this module never imports them.
ENGINES: dict[str, type[LocalRun]] = {"local": LocalRun}


def aggregate(pipeline: Pipeline, results: dict[tuple[int, int], dict], decisions: dict[int, dict]) -> dict[str, Any]:
    """Sum the per-shard statistics into one record per step, in pipeline order."""
    merged: dict[str, StepStats] = {}
    for (_, _), result in sorted(results.items()):
        for key, data in result["stats"].items():
            merged.setdefault(key, StepStats()).merge(StepStats.from_dict(data))
    keys = pipeline.keys()
    for stage, decision in decisions.items():
        key = keys[pipeline.stages()[stage][1]]
        merged.setdefault(key, StepStats()).merge(StepStats.from_dict({**decision["stats"], "docs_in": 0, "docs_out": 0}))
    read = merged.get("read", StepStats())
    if read.docs_in == 0:
        raise LmforgeError("the input held no documents (every file was empty); check input.paths and input.format")
    ordered = {"read": read.to_dict()}
    ordered.update({key: merged[key].to_dict() for key in keys if key in merged})
    ordered["write"] = merged.get("write", StepStats()).to_dict()
    return {
        "fingerprint": pipeline.fingerprint(),
        "input": {"paths": [str(p) for p in pipeline.input.paths], "files": sum(len(s) for s in pipeline.input.shard_files())},
        "output": {"dir": pipeline.output.dir, "format": pipeline.output.format},
        "steps": ordered,
        "documents_in": read.docs_in,
        "documents_out": merged.get("write", StepStats()).docs_out,
    }


def load_stats(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / "stats.json"
    if not path.exists():
        raise LmforgeError(f"no stats.json in {directory}; run `lmforge data run pipeline.yaml` first")
    return json.loads(path.read_text())
