import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmforge.data.curate import Pipeline, load_stats
from lmforge.data.curate.card import write_card
from lmforge.errors import LmforgeError

VOCAB = ("river stone garden window market teacher evening winter summer harbor candle forest silver "
         "morning letter village travel bridge orchard lantern meadow journey thunder mountain").split()
STOP = ["the", "and", "to", "of", "with", "that"]


def prose(rng, sentences=12):
    out = []
    for _ in range(sentences):
        words = [rng.choice(VOCAB) if i % 3 else rng.choice(STOP) for i in range(rng.randint(8, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return "\n".join(" ".join(out[i:i + 2]) for i in range(0, len(out), 2))


@pytest.fixture()
def corpus(tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "in"
    folder.mkdir()
    docs = [prose(rng) for _ in range(30)]
    docs[5] = docs[3]                                                    # exact duplicate
    docs[7] = docs[4].replace(docs[4].split()[10], "zebra", 1)           # near duplicate
    docs[9] = docs[9] + " Write to jane.doe@example.com today."          # PII
    docs[11] = "Too short."                                              # Gopher: too few words
    for part in range(3):
        with open(folder / f"part{part}.jsonl", "wb") as handle:
            for i in range(part, 30, 3):
                handle.write((json.dumps({"id": f"doc{i}", "text": docs[i]}) + "\n").encode())
            if part == 1:
                handle.write(b'{"id": "broken", "text": "unterminated\n')
                handle.write(b'{"id": "latin1", "text": "caf\xe9"}\n')
    (folder / "empty.jsonl").write_bytes(b"")
    return folder


def config(corpus, out, **input_options):
    return {
        "input": {"paths": [str(corpus)], "shards": 4, **input_options},
        "steps": ["gopher_quality", "exact_dedup", "minhash_dedup", "pii", "bias_terms"],
        "output": {"dir": str(out), "format": "jsonl"},
    }


def read_outputs(out: Path) -> dict[str, str]:
    files = sorted((out / "data").glob("*")) + sorted((out / "exclusions").rglob("*.jsonl"))
    return {str(f.relative_to(out)): f.read_text() for f in files}


def test_pipeline_accounts_for_every_document(corpus, tmp_path):
    stats = Pipeline.from_dict(config(corpus, tmp_path / "out")).run(workers=1)
    steps = stats["steps"]
    assert stats["documents_in"] == 32  # 30 documents + 2 bad lines
    dropped = sum(s["docs_in"] - s["docs_out"] for s in steps.values())
    assert stats["documents_out"] + dropped == stats["documents_in"]
    assert steps["read"]["dropped"] == {"malformed_json": 1, "invalid_utf8": 1}
    assert steps["01-gopher_quality"]["dropped"] == {"too_few_words": 1}
    assert steps["02-exact_dedup"]["dropped"] == {"exact_duplicate": 1}
    assert steps["03-minhash_dedup"]["dropped"] == {"near_duplicate": 1}
    assert steps["04-pii"]["counters"]["pii"] == {"EMAIL": 1}
    assert "empty.jsonl" in " ".join(steps["read"]["counters"]["empty_files"])
    def excluded(key):
        return [json.loads(line) for f in sorted((tmp_path / "out" / "exclusions" / key).glob("*.jsonl"))
                for line in f.read_text().splitlines()]

    details = " ".join(d["detail"] for d in excluded("read"))
    assert "part1.jsonl:11: malformed JSON" in details and "part1.jsonl:12: byte" in details
    assert [(d["id"], d["detail"]) for d in excluded("03-minhash_dedup")] == [("doc7", "duplicate of doc4")]
    assert [d["id"] for d in excluded("02-exact_dedup")] == ["doc5"]
    output = "".join(f.read_text() for f in (tmp_path / "out" / "data").glob("*.jsonl"))
    assert "jane.doe@example.com" not in output and "<EMAIL>" in output
    md, html = write_card(tmp_path / "out")
    assert "Duplicate clusters" in md.read_text() and "data:image/png;base64" in html.read_text()


def test_workers_do_not_change_the_output(corpus, tmp_path):
    Pipeline.from_dict(config(corpus, tmp_path / "one")).run(workers=1)
    Pipeline.from_dict(config(corpus, tmp_path / "two")).run(workers=2)
    assert read_outputs(tmp_path / "one") == read_outputs(tmp_path / "two")


def test_bad_lines_fatal_when_asked(corpus, tmp_path):
    with pytest.raises(LmforgeError, match=r"part1\.jsonl:11: malformed JSON"):
        Pipeline.from_dict(config(corpus, tmp_path / "out", on_error="raise")).run(workers=1)


def test_configuration_errors(corpus, tmp_path):
    with pytest.raises(LmforgeError, match="unknown step 'gopher'.*gopher_quality"):
        Pipeline.from_dict({**config(corpus, tmp_path / "o"), "steps": ["gopher"]})
    with pytest.raises(LmforgeError, match="has no option min_wrds"):
        Pipeline.from_dict({**config(corpus, tmp_path / "o"), "steps": [{"gopher_quality": {"min_wrds": 3}}]})
    with pytest.raises(LmforgeError, match="input path not found"):
        Pipeline.from_dict(config(tmp_path / "missing", tmp_path / "o")).run(workers=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.jsonl").write_text("")
    with pytest.raises(LmforgeError, match="no documents"):
        Pipeline.from_dict(config(empty, tmp_path / "o2")).run(workers=1)
    Pipeline.from_dict(config(corpus, tmp_path / "o3")).run(workers=1)
    changed = config(corpus, tmp_path / "o3")
    changed["steps"] = ["gopher_quality"]
    with pytest.raises(LmforgeError, match="different pipeline"):
        Pipeline.from_dict(changed).run(workers=1)


SLOW_RUN = textwrap.dedent("""
    import json, os, sys, time
    from dataclasses import dataclass
    from lmforge.data.curate import Pipeline, Step

    @dataclass
    class Slow(Step):
        name = "slow_test_step"
        def process(self, doc):
            time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))

    config = json.loads(sys.argv[1])
    config["steps"].insert(1, "slow_test_step")
    Pipeline.from_dict(config).run(workers=1)
""")


def test_sigkill_then_resume_gives_identical_output(corpus, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SLOW_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(out, slow, wait_for_markers=None):
        cfg = json.dumps({**config(corpus, out), "input": {"paths": [str(corpus)], "shards": 8}})
        process = subprocess.Popen([sys.executable, str(script), cfg], env={**env, "SLOW_SECONDS": slow},
                                   start_new_session=True)
        if wait_for_markers is None:
            assert process.wait(timeout=120) == 0
            return
        deadline = time.time() + 60
        while time.time() < deadline and len(list((out / "work" / "done").glob("*.json"))) < wait_for_markers:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    run(tmp_path / "whole", "0")
    run(tmp_path / "killed", "0.05", wait_for_markers=3)
    done = list((tmp_path / "killed" / "work" / "done").glob("*.json"))
    assert 3 <= len(done) < 8 * 3 and not (tmp_path / "killed" / "stats.json").exists()
    run(tmp_path / "killed", "0")
    assert read_outputs(tmp_path / "killed") == read_outputs(tmp_path / "whole")
    assert load_stats(tmp_path / "killed")["documents_out"] == load_stats(tmp_path / "whole")["documents_out"]


def test_shipped_pipelines_parse():
    import lmforge.data.curate as curate

    shipped = sorted((Path(curate.__file__).parent / "pipelines").glob("*.yaml"))
    assert shipped
    for path in shipped:
        pipeline = Pipeline.from_yaml(path)
        assert pipeline.steps and pipeline.stages()[-1][1] is None


@pytest.mark.slow
def test_ray_engine_matches_local_engine(corpus, tmp_path, optional):
    """The Ray engine against a local Ray instance: same steps, same output as the local engine."""
    optional("ray", "ray")
    local = Pipeline.from_dict(config(corpus, tmp_path / "local")).run(engine="local", workers=1)
    on_ray = Pipeline.from_dict(config(corpus, tmp_path / "ray")).run(engine="ray", workers=2)
    assert read_outputs(tmp_path / "ray") == read_outputs(tmp_path / "local")
    assert on_ray["steps"] == {k: {**v, "seconds": on_ray["steps"][k]["seconds"]} for k, v in local["steps"].items()}
