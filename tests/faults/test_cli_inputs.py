"""Bad input to every command: one `error:` line, exit status 2, no traceback, and the user's files untouched.

Each case fails before any model is loaded or any work starts (the suite runs in seconds). ``{model}`` is a tiny
lmforge model folder; the working directory is a project holding ``d/keep``, ``results/``, ``afile``,
``existing.gguf`` and ``corpus.txt`` (see ``workspace``)."""

from __future__ import annotations

import pytest

from .conftest import assert_one_line_error, tree_hash

M = "{model}"
FAST = ["--calib", "corpus.txt", "--calib-samples", "2", "--seqlen", "16", "--eval-windows", "0", "--arc-limit", "0",
        "--speed-tokens", "0"]

CASES = [
    # compress: outputs
    ("compress-o-user-folder", ["compress", M, "-o", "d", *FAST], "did not write"),
    ("compress-o-user-folder-overwrite", ["compress", M, "-o", "d", "--overwrite", *FAST], "did not write"),
    ("compress-o-cwd", ["compress", M, "-o", ".", *FAST], "working directory"),
    ("compress-o-parent-of-cwd", ["compress", M, "-o", "..", "--overwrite", *FAST], "working directory"),
    ("compress-o-a-file", ["compress", M, "-o", "afile", *FAST], "is a file"),
    ("compress-o-the-input", ["compress", M, "-o", M, "--overwrite", *FAST], "the input"),
    ("compress-o-run-store", ["compress", M, "-o", "{home}", "--overwrite", *FAST], "run store"),
    ("compress-json-folder", ["compress", M, "--json", "results", *FAST], "is a folder"),
    ("compress-json-under-a-file", ["compress", M, "--json", "afile/r.json", *FAST], "not a folder"),
    ("compress-gguf-exists", ["compress", M, "--gguf", "existing.gguf", "--group-size", "32", *FAST], "--overwrite"),
    ("compress-compressed-tensors-user-folder", ["compress", M, "--compressed-tensors", "d", *FAST], "did not write"),
    # compress: options
    ("compress-method", ["compress", M, "--method", "nope", *FAST], "unknown method"),
    ("compress-calib-samples-0", ["compress", M, *FAST, "--calib-samples", "0"], "--calib-samples"),
    ("compress-seqlen-0", ["compress", M, *FAST, "--seqlen", "0"], "--seqlen"),
    ("compress-seqlen-over-context", ["compress", M, *FAST, "--seqlen", "100000"], "context"),
    ("compress-group-size-negative", ["compress", M, "--group-size", "-1", *FAST], "--group-size"),
    ("compress-group-size-does-not-divide", ["compress", M, "--group-size", "48", *FAST], "does not divide"),
    ("compress-threads-0", ["compress", M, "--threads", "0", *FAST], "--threads"),
    ("compress-eval-windows-negative", ["compress", M, *FAST, "--eval-windows", "-1"], "--eval-windows"),
    ("compress-bits-text", ["compress", M, "--bits", "four", *FAST], "--bits"),
    ("compress-model-missing", ["compress", "no/such/model/here", *FAST], "model not found"),
    ("compress-model-a-text-file", ["compress", "corpus.txt", *FAST], "not a .gguf"),
    # prune
    ("prune-o-user-folder", ["prune", M, "-o", "d", "--seqlen", "16"], "did not write"),
    ("prune-o-cwd", ["prune", M, "-o", ".", "--seqlen", "16"], "working directory"),
    ("prune-sparsity-1", ["prune", M, "-o", "p", "--sparsity", "1", "--seqlen", "16"], "--sparsity"),
    ("prune-sparsity-negative", ["prune", M, "-o", "p", "--sparsity", "-0.1", "--seqlen", "16"], "--sparsity"),
    ("prune-heads-over-1", ["prune", M, "-o", "p", "--method", "structured", "--heads", "1.5", "--seqlen", "16"], "--heads"),
    ("prune-samples-0", ["prune", M, "-o", "p", "--samples", "0", "--seqlen", "16"], "--samples"),
    ("prune-seqlen-over-context", ["prune", M, "-o", "p", "--seqlen", "100000"], "context"),
    ("prune-group-size-0", ["prune", M, "-o", "p", "--quantize-bits", "4", "--group-size", "0", "--seqlen", "16"], "--group-size"),
    ("prune-json-folder", ["prune", M, "-o", "p", "--json", "results", "--seqlen", "16"], "is a folder"),
    # distill
    ("distill-o-user-folder", ["distill", M, "--teacher", M, "-o", "d"], "did not write"),
    ("distill-o-cwd", ["distill", M, "--teacher", M, "-o", "."], "working directory"),
    ("distill-steps-0", ["distill", M, "--teacher", M, "-o", "s", "--steps", "0"], "--steps"),
    ("distill-batch-size-negative", ["distill", M, "--teacher", M, "-o", "s", "--batch-size", "-3"], "--batch-size"),
    ("distill-lr-0", ["distill", M, "--teacher", M, "-o", "s", "--lr", "0"], "--lr"),
    # optimize
    ("optimize-max-mb-negative", ["optimize", M, "--max-mb", "-5"], "--max-mb"),
    ("optimize-max-mb-0", ["optimize", M, "--max-mb", "0"], "--max-mb"),
    ("optimize-min-tokens-per-s-0", ["optimize", M, "--min-tokens-per-s", "0"], "--min-tokens-per-s"),
    ("optimize-ppl-increase-negative", ["optimize", M, "--max-ppl-increase", "-10%"], "--max-ppl-increase"),
    ("optimize-o-user-folder", ["optimize", M, "--max-mb", "5", "-o", "d"], "did not write"),
    ("optimize-ppl-windows-0", ["optimize", M, "--max-mb", "5", "--ppl-windows", "0"], "--ppl-windows"),
    ("optimize-bits-list", ["optimize", M, "--max-mb", "5", "--bits", "4,x"], "cannot read the list"),
    ("optimize-json-folder", ["optimize", M, "--max-mb", "5", "--json", "results"], "is a folder"),
    # finetune
    ("finetune-o-user-folder", ["finetune", M, "--data", "corpus.txt", "-o", "d"], "did not write"),
    ("finetune-o-cwd", ["finetune", M, "--data", "corpus.txt", "-o", "."], "working directory"),
    ("finetune-batch-size-0", ["finetune", M, "--data", "corpus.txt", "--batch-size", "0"], "--batch-size"),
    ("finetune-max-length-0", ["finetune", M, "--data", "corpus.txt", "--max-length", "0"], "--max-length"),
    ("finetune-lr-0", ["finetune", M, "--data", "corpus.txt", "--lr", "0"], "lr must be above 0"),
    ("finetune-rank-0", ["finetune", M, "--data", "corpus.txt", "--rank", "0"], "rank"),
    ("finetune-json-folder", ["finetune", M, "--data", "corpus.txt", "--json", "results"], "is a folder"),
    # train
    ("train-o-user-folder", ["train", "--preset", "1m", "--corpus", "corpus.txt", "-o", "d"], "did not write"),
    ("train-o-cwd", ["train", "--preset", "1m", "--corpus", "corpus.txt", "-o", "."], "working directory"),
    ("train-lr-text-in-yaml", ["train", "-c", "{bad_lr}"], "config field 'lr'"),
    ("train-unknown-field", ["train", "-c", "{unknown_field}"], "unknown config field"),
    ("train-non-utf8-yaml", ["train", "-c", "{latin1}"], "not UTF-8"),
    ("train-batch-size-0", ["train", "--preset", "1m", "--corpus", "corpus.txt", "--batch-size", "0"], "batch_size"),
    ("train-lr-negative", ["train", "--preset", "1m", "--corpus", "corpus.txt", "--lr", "-1"], "lr must be above 0"),
    ("train-json-folder", ["train", "--preset", "1m", "--corpus", "corpus.txt", "--json", "results"], "is a folder"),
    # export
    ("export-o-existing", ["export", M, "-o", "existing.gguf"], "--overwrite"),
    ("export-o-folder", ["export", M, "-o", "results"], "is a folder"),
    ("export-seqlen-0", ["export", M, "-o", "new.gguf", "--seqlen", "0"], "--seqlen"),
    # eval
    ("eval-batch-size-0", ["eval", M, "--batch-size", "0"], "--batch-size"),
    ("eval-batch-size-negative", ["eval", M, "--batch-size", "-3"], "--batch-size"),
    ("eval-seqlen-0", ["eval", M, "--seqlen", "0"], "--seqlen"),
    ("eval-limit-0", ["eval", M, "--limit", "0"], "--limit"),
    ("eval-json-folder", ["eval", M, "--json", "results"], "is a folder"),
    ("eval-unknown-task", ["eval", M, "--task", "no_such_task"], "no_such_task"),
    ("eval-non-utf8-task-file", ["eval", M, "--task", "{latin1_task}"], "not UTF-8"),
    # audit
    ("audit-resamples-0", ["audit", M, "--resamples", "0"], "--resamples"),
    ("audit-batch-size-0", ["audit", M, "--batch-size", "0"], "--batch-size"),
    ("audit-limit-0", ["audit", M, "--limit", "0"], "--limit"),
    ("audit-unknown-suite", ["audit", M, "--suite", "nope"], "unknown audit suite"),
    ("audit-json-folder", ["audit", M, "--json", "results"], "is a folder"),
    # explain
    ("explain-top-k-0", ["explain", M, "Rocks are", "--target", " worn", "--top-k", "0"], "--top-k"),
    ("explain-steps-0", ["explain", M, "Rocks are", "--target", " worn", "--steps", "0"], "--steps"),
    ("explain-html-folder", ["explain", M, "Rocks are", "--target", " worn", "--html", "results"], "is a folder"),
    ("explain-method", ["explain", M, "Rocks are", "--target", " worn", "--method", "magic"], "unknown --method"),
    # serve
    ("serve-port-99999", ["serve", M, "--port", "99999"], "--port"),
    ("serve-port-0", ["serve", M, "--port", "0"], "--port"),
    ("serve-rate-0", ["serve", M, "--rate", "0"], "--rate"),
    ("serve-rate-negative", ["serve", M, "--rate", "-1"], "--rate"),
    ("serve-usage-log-a-folder", ["serve", M, "--usage-log", "results"], "is a folder"),
    ("serve-public-without-key", ["serve", M, "--host", "0.0.0.0"], "--api-key"),
    # scale, report, runs, data
    ("scale-bootstrap-0", ["scale", "--bootstrap", "0"], "--bootstrap"),
    ("scale-lr-0", ["scale", "--lr", "0"], "--lr"),
    ("report-out-folder", ["report", "-o", "results"], "is a folder"),
    ("data-run-missing-file", ["data", "run", "nope.yaml"], "not found"),
    ("data-run-non-utf8", ["data", "run", "{latin1}"], "not UTF-8"),
    ("data-run-min-score-text", ["data", "run", "{min_score}"], "min_score"),
    ("data-run-bands-0", ["data", "run", "{bands}"], "bands"),
    ("data-run-o-user-folder", ["data", "run", "{pipeline}", "-o", "d"], "not a pipeline output"),
    ("data-run-o-user-folder-overwrite", ["data", "run", "{pipeline}", "-o", "d", "--overwrite"], "not a pipeline output"),
    ("data-run-o-cwd", ["data", "run", "{pipeline}", "-o", ".", "--overwrite"], "working directory"),
    ("data-run-workers-0", ["data", "run", "{pipeline}", "--workers", "0"], "--workers"),
    ("data-run-workers-negative", ["data", "run", "{pipeline}", "--workers", "-2"], "--workers"),
    ("runs-list-limit-0", ["runs", "list", "--limit", "0"], "--limit"),
    ("runs-show-unknown", ["runs", "show", "nope"], "nope"),
    ("quickstart-into-user-files", ["quickstart", "-o", "{quickstart}"], "did not write"),
    ("models-info-json-folder", ["models", "info", M, "--json", "results"], "is a folder"),
    ("compare-json-folder", ["compare", "latest", "latest", "--json", "results"], "is a folder"),
    ("compare-threshold-negative", ["compare", "latest", "latest", "--threshold", "-1"], "--threshold"),
    ("models-pull-unknown", ["models", "pull", "no-such-model"], "unknown zoo model"),
    ("models-info-missing", ["models", "info", "no/such/folder/x"], "model not found"),
    ("model-safetensors-header-a-list", ["eval", "{bad_header}", "--limit", "1"], "not an object"),
    ("model-safetensors-unknown-dtype", ["eval", "{bad_dtype}", "--limit", "1"], "unknown dtype"),
    ("model-safetensors-truncated", ["eval", "{truncated}", "--limit", "1"], "truncated"),
    ("model-config-does-not-match-weights", ["eval", "{mismatched}", "--limit", "1", "--task", "corpus.txt"],
     "do not match its config.json"),
]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """Config files and damaged models the cases name, made once and kept outside the project folder (so the
    project's hash covers only the project)."""
    root = tmp_path_factory.mktemp("configs")
    corpus = root / "corpus.txt"
    corpus.write_text(("Rocks are worn down by wind and water. " * 20 + "\n") * 10)
    pipeline = f"input:\n  paths: [{corpus}]\nsteps:\n  - {{step}}\noutput:\n  dir: {root / 'curated'}\n"
    files = {
        "bad_lr": "lr: abc\nmax_steps: 2\n",
        "unknown_field": "learning_rate: 0.1\n",
        "min_score": pipeline.replace("{step}", "language: {min_score: abc}"),
        "bands": pipeline.replace("{step}", "minhash_dedup: {bands: 0}"),
        "pipeline": pipeline.replace("{step}", "exact_dedup"),
    }
    paths = {}
    for name, text in files.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(text, encoding="utf-8")
    paths["latin1"] = root / "latin1.yaml"
    paths["latin1"].write_bytes("lr: 0.1  # caf\xe9\n".encode("latin-1"))
    paths["quickstart"] = root / "tour"
    (paths["quickstart"] / "smollm2-wanda50").mkdir(parents=True)
    (paths["quickstart"] / "smollm2-wanda50" / "notes.txt").write_text("mine\n")
    paths["latin1_task"] = root / "latin1_task.yaml"
    paths["latin1_task"].write_bytes("task: caf\xe9\ndataset_path: json\n".encode("latin-1"))
    return {**paths, **_damaged_models(root)}


def _damaged_models(root):
    """Copies of the tiny model with one thing wrong each: the safetensors header, a dtype, the length, config.json."""
    import json
    import shutil
    import struct

    from lmforge.models import save_model, tiny_model_and_tokenizer

    source = root / "good-model"
    if not source.exists():
        save_model(*tiny_model_and_tokenizer(["Rocks are worn down by wind and water."] * 3, seed=0), source)
    weights = (source / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8:8 + length])

    def variant(name, data=None, config=None):
        folder = root / name
        shutil.copytree(source, folder, dirs_exist_ok=True)
        if data is not None:
            (folder / "model.safetensors").write_bytes(data)
        if config is not None:
            (folder / "config.json").write_text(json.dumps(config))
        return folder

    def with_header(value):
        text = json.dumps(value).encode()
        return struct.pack("<Q", len(text)) + text + weights[8 + length:]

    first = next(k for k in header if k != "__metadata__")
    config = json.loads((source / "config.json").read_text())
    return {
        "bad_header": variant("bad-header", with_header([])),
        "bad_dtype": variant("bad-dtype", with_header({**header, first: {**header[first], "dtype": "F13"}})),
        "truncated": variant("truncated", weights[: len(weights) // 2]),
        "mismatched": variant("mismatched", config={**config, "intermediate_size": config["intermediate_size"] * 2}),
    }


@pytest.mark.parametrize("args,match", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_fails_in_one_line_and_changes_nothing(args, match, lmforge, workspace, tiny_folder, configs):
    import os

    values = {"model": tiny_folder, "home": os.environ["LMFORGE_HOME"], **configs}
    args = [a.format(**values) for a in args]
    model_before, project_before = tree_hash(tiny_folder), tree_hash(workspace)
    outcome = lmforge(*args)
    assert_one_line_error(outcome, 2, match)
    assert tree_hash(workspace) == project_before and tree_hash(tiny_folder) == model_before


def test_there_are_at_least_sixty_cases_over_every_command():
    assert len(CASES) >= 60
    commands = {case[1][0] for case in CASES}
    assert {"compress", "prune", "distill", "optimize", "finetune", "train", "export", "eval", "audit", "explain",
            "serve", "scale", "report", "data", "models"} <= commands
