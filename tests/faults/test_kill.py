"""kill -9 in the middle of long commands, then a rerun: no process left behind, no half output, the rerun's
output equal to an uninterrupted run's, and the killed run recorded as `killed`.

The commands run as a user runs them, in a child process through ``lmforge.cli.main``; a small prelude slows one
spot (a curation step, the last moment of a folder write) so the kill lands where the test says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmforge.data.curate import Step

from .conftest import tree_hash


@dataclass
class SlowStep(Step):
    """The child's `slow_test_step`, here too so that reruns in this process read the same pipeline (no delay here)."""

    name = "slow_test_step"

    def process(self, doc):
        return None

PRELUDE = textwrap.dedent("""
    import os, sys, time
    from dataclasses import dataclass
    from lmforge.data.curate import Step

    @dataclass
    class Slow(Step):
        name = "slow_test_step"
        def process(self, doc):
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))

    if os.environ.get("SLOW_SAVE"):  # the SLOW_AFTER-th write of a SLOW_KIND folder holds still once its temp is full
        import lmforge.io as io
        real, calls = io.mark_artifact, []
        def slow_mark(folder, kind):
            if kind == os.environ.get("SLOW_KIND", "model"):
                calls.append(folder)
                if len(calls) >= int(os.environ.get("SLOW_AFTER", "1")):
                    time.sleep(float(os.environ["SLOW_SAVE"]))
            real(folder, kind)
        io.mark_artifact = slow_mark

    from lmforge.cli.main import main
    sys.argv = ["lmforge", *sys.argv[1:]]
    main()
""")


@pytest.fixture
def child(tmp_path):
    """``child(args, env=..)``: a running `lmforge ARGS` child process (its own session, so cleanup can reach it)."""
    script = tmp_path / "lmforge_child.py"
    script.write_text(PRELUDE)
    started = []

    def start(args, **env):
        process = subprocess.Popen([sys.executable, str(script), *map(str, args)], start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:  # whatever a failed assertion left running
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()


def living_processes(marker: str) -> list[int]:
    """Processes (zombies aside: they hold nothing) whose command line names ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_until(condition, timeout=90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def in_process_ok(outcome):
    assert outcome.code == 0 and "Traceback" not in outcome.err, (outcome.out + outcome.err)[-3000:]
    return outcome.out


def write_corpus(folder: Path, files: int = 6, docs: int = 16) -> None:
    """Real prose (WikiText-2 paragraphs), so most documents survive the quality and dedup steps."""
    from lmforge.paths import data_dir

    text = (data_dir() / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n") if len(p.split()) > 60][: files * docs]
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(files):
        with open(folder / f"part{part}.jsonl", "w", encoding="utf-8") as handle:
            for i in range(part, len(paragraphs), files):
                handle.write(json.dumps({"id": f"w{i}", "text": paragraphs[i]}) + "\n")


def pipeline_file(path: Path, corpus: Path, out: Path, slow: bool) -> Path:
    slow_step = ["slow_test_step"] if slow else []  # in the first stage and the last: a kill at the global steps lands mid-run
    steps = ["gopher_quality", *slow_step, "exact_dedup", "minhash_dedup", "pii", *slow_step]
    path.write_text(json.dumps({"input": {"paths": [str(corpus)], "shards": 6}, "steps": steps,
                                "output": {"dir": str(out), "format": "jsonl"}}))
    return path


def outputs(out: Path) -> dict[str, str]:
    files = sorted((out / "data").glob("*")) + sorted((out / "exclusions").rglob("*.jsonl"))
    return {str(f.relative_to(out)): f.read_text() for f in files}


@pytest.mark.parametrize("kill_after_markers", [0, 1, 4, 6], ids=["at-start", "first-shard", "mid-stage", "at-the-global-step"])
def test_kill_9_of_data_run_with_workers_leaves_no_process_and_resumes_to_the_same_output(
        kill_after_markers, tmp_path, child, lmforge):
    corpus = tmp_path / "in"
    write_corpus(corpus)
    # the slow step is only a way to time the kill; the reference run has it too, so outputs compare one to one
    whole = pipeline_file(tmp_path / "whole.yaml", corpus, tmp_path / "whole", slow=True)
    killed = pipeline_file(tmp_path / "killed.yaml", corpus, tmp_path / "killed", slow=True)
    in_process_ok(lmforge("data", "run", whole, "--workers", "2", "--no-card"))

    process = child(["data", "run", killed, "--workers", "2", "--no-card"], SLOW_SECONDS="0.03")
    done = tmp_path / "killed" / "work" / "done"
    started = tmp_path / "killed" / "work" / "pipeline.json"
    assert wait_until(lambda: started.exists() and len(list(done.glob("stage0-*.json"))) >= kill_after_markers)
    assert process.poll() is None  # killed mid-run, not after it
    os.kill(process.pid, signal.SIGKILL)  # the parent only: its workers must follow by themselves
    process.wait()
    time.sleep(5)
    assert living_processes(str(killed)) == []
    assert not (tmp_path / "killed" / "stats.json").exists()

    listed = lmforge("runs", "list", "--command", "data run")
    assert "killed" in listed.out, listed.out

    in_process_ok(lmforge("data", "run", killed, "--workers", "2", "--no-card"))
    assert outputs(tmp_path / "killed") == outputs(tmp_path / "whole")
    assert sum(len(text.splitlines()) for name, text in outputs(tmp_path / "whole").items() if name.startswith("data")) > 50
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_a_changed_input_file_changes_the_output_and_an_unchanged_one_resumes(tmp_path, lmforge):
    corpus = tmp_path / "in"
    write_corpus(corpus)
    pipeline = pipeline_file(tmp_path / "p.yaml", corpus, tmp_path / "out", slow=False)
    in_process_ok(lmforge("data", "run", pipeline, "--workers", "2", "--no-card"))
    first = outputs(tmp_path / "out")
    in_process_ok(lmforge("data", "run", pipeline, "--workers", "2", "--no-card"))  # unchanged: resumes, same output
    assert outputs(tmp_path / "out") == first

    with open(corpus / "part2.jsonl", "a", encoding="utf-8") as handle:
        text = "The lighthouse keeper of the northern island kept a careful journal for forty years. " + " ".join(
            f"On day {d} he recorded the weather, the ships that passed and the birds that nested below the lamp room."
            for d in range(1, 9))
        handle.write(json.dumps({"id": "new-doc", "text": text}) + "\n")
    in_process_ok(lmforge("data", "run", pipeline, "--workers", "2", "--no-card"))
    changed = outputs(tmp_path / "out")
    kept = "".join(text for name, text in changed.items() if name.startswith("data"))
    assert changed != first and '"new-doc"' in kept


def folder_command(command: str, model: Path, corpus: Path, out: Path) -> list:
    if command == "compress":
        return ["compress", model, "--method", "rtn", "--group-size", "32", "--calib", corpus, "--seqlen", "16",
                "--eval-windows", "0", "--arc-limit", "0", "--speed-tokens", "0", "--threads", "1", "-o", out]
    if command == "prune":
        return ["prune", model, "--method", "wanda", "--calib", corpus, "--samples", "2", "--seqlen", "16", "-o", out]
    if command == "optimize":
        return ["optimize", model, "--max-mb", "100", "--quants", "rtn", "--bits", "8", "--group-sizes", "32",
                "--sparsities", "0", "--corpus", corpus, "--ppl-windows", "1", "--ppl-seqlen", "16", "--calib", corpus,
                "--calib-samples", "1", "--calib-seqlen", "16", "--plot", out.parent / "front", "-o", out]
    if command == "distill":
        return ["distill", model, "--teacher", model, "--corpus", corpus, "--steps", "2", "--batch-size", "1",
                "--seq-len", "16", "-o", out]
    return ["finetune", model, "--data", corpus, "--format", "text", "--steps", "1", "--batch-size", "2",
            "--micro-batch-size", "2", "--max-length", "16", "--ood-windows", "1", "--ood-seqlen", "16",
            "--max-eval-examples", "2", "--threads", "1", "-o", out]


@pytest.mark.parametrize("command", ["compress", "prune", "distill", "finetune", "optimize"])
def test_kill_9_while_a_command_writes_its_model_leaves_no_half_folder_and_the_rerun_works(
        command, tmp_path, child, tiny_folder, workspace, lmforge):
    out = tmp_path / "q"
    args = folder_command(command, tiny_folder, workspace / "corpus.txt", out)
    process = child(args, SLOW_SAVE="60")
    temps = lambda: list(tmp_path.glob(".q.*.tmp"))  # noqa: E731
    assert wait_until(lambda: any(any(t.iterdir()) for t in temps()), timeout=120), process.stderr.read()
    assert process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists() and temps()  # killed before the rename: no folder that looks complete

    in_process_ok(lmforge(*args))
    assert (out / ".lmforge-artifact.json").is_file() and not temps()  # the dead run's temp folder was cleaned
    before = tree_hash(out)
    again = lmforge(*args)
    assert again.code == 2 and "--overwrite" in again.err and tree_hash(out) == before


def test_kill_9_of_train_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path, child, workspace, lmforge):
    args = ["train", "--preset", "1m", "--corpus", workspace / "corpus.txt", "--steps", "6", "--batch-size", "2",
            "--context-length", "32", "--checkpoint-interval", "2", "--threads", "1", "--seed", "0"]
    in_process_ok(lmforge(*args, "-o", tmp_path / "whole", "--json", tmp_path / "whole.json"))

    out = tmp_path / "killed"
    process = child([*args, "-o", out], SLOW_SAVE="60", SLOW_KIND="checkpoint", SLOW_AFTER="2")
    checkpoints = out / "checkpoints"
    assert wait_until(lambda: list(checkpoints.glob(".step-000004.*.tmp")) and (checkpoints / "step-000002").is_dir())
    assert process.poll() is None  # killed while it wrote its second checkpoint
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-000002"] and not (out / "model").exists()

    in_process_ok(lmforge(*args, "-o", out, "--resume", out, "--json", tmp_path / "resumed.json"))
    whole, resumed = (json.loads((tmp_path / name).read_text()) for name in ("whole.json", "resumed.json"))
    assert resumed["final_train_loss"] == pytest.approx(whole["final_train_loss"], rel=1e-5)
    assert (out / "model" / "config.json").is_file() and not list(tmp_path.rglob("*.tmp"))
