"""Curation benchmark: lmforge against DataTrove on the same pages, the same rules, in the same run.

    flock /tmp/lmforge-heavy.lock .venv/bin/python benchmarks/curate.py [--repeats 5] [--out benchmarks/results/curate.json]

Inputs (../shared/data): the 181 HTML pages of web_articles and their gold article text; a labelled
near-duplicate set generated here by perturbing the gold articles (word deletions, insertions, paragraph
reordering, added boilerplate); the Presidio synthetic PII set.

Measures
- docs/s per core for each step, both tools single-process on the same documents (each filter runs on
  the same extracted pages, not chained, so every tool sees identical input), and how often the two
  tools' keep/drop decisions agree;
- extraction token-level F1 against the gold text (the article-extraction-benchmark metric);
- near-duplicate precision, recall and F1 over all document pairs (same predicted cluster vs same label);
- PII precision and recall per type (a prediction counts when it overlaps a gold span of its type).
DataTrove runs in its own venv (``--datatrove-python``, default .venv-datatrove/bin/python); steps it
does not have offline (language id downloads a fastText model) are shown as "-".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lmforge.cli.common import print_table
from provenance import save_result
from lmforge.data import load_records, read_html
from lmforge.data.curate import (
    BiasTerms, C4Quality, Decontaminate, Document, ExactDedup, ExtractHtml, FineWebQuality, FixUnicode,
    GopherQuality, GopherRepetition, LanguageFilter, MinHashDedup, PiiRedact, find_pii,
)
from lmforge.paths import data_dir

ROOT = Path(__file__).resolve().parents[1]

DATATROVE_SIDE = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from datatrove.data import Document
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

job = json.load(open(sys.argv[1]))
texts, htmls, pii_texts = job["texts"], job["htmls"], job["pii_texts"]
out = {"seconds": {}, "keep": {}, "docs": {}}

def timed(name, fn, items):
    fn(items[0])  # warm up lazy loading (tokenizers, models)
    start = time.perf_counter()
    results = [fn(x) for x in items]
    out["seconds"][name] = time.perf_counter() - start
    out["docs"][name] = len(items)
    return results

extractor = Trafilatura(favour_precision=True, timeout=None, deduplicate=False)
out["extracted"] = timed("extract_html", extractor.extract, htmls)
docs = lambda: [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
for name, step in [("gopher_quality", GopherQualityFilter()), ("gopher_repetition", GopherRepetitionFilter()),
                   ("c4", C4QualityFilter()), ("fineweb", FineWebQualityFilter())]:
    results = timed(name, step.filter, docs())
    out["keep"][name] = [r if isinstance(r, bool) else bool(r[0]) for r in results]
ftfy = FTFYFormatter()
timed("fix_unicode", ftfy.format, texts)
pii = PIIFormatter(only_remove_public_ips=False, email_replacement="\x00EMAIL\x00", ip_replacement="\x00IP\x00")
timed("pii (EMAIL+IP only)", pii.format, texts)
out["pii_redacted"] = [pii.format(t) for t in pii_texts]
signer = MinhashDedupSignature(output_folder="/tmp/unused-datatrove-sigs", config=MinhashConfig())
timed("minhash_dedup (signatures)", lambda t: signer.get_signature(signer.get_shingles(t)), texts)

# Near-duplicates with DataTrove's own three MinHash stages (signatures, buckets, clusters), one worker.
import os, struct, tempfile
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster
from datatrove.pipeline.readers import JsonlReader
folder = tempfile.mkdtemp()
os.makedirs(f"{folder}/in")
with open(f"{folder}/in/docs.jsonl", "w") as handle:
    for i, text in enumerate(job["dup_texts"]):
        handle.write(json.dumps({"text": text, "id": str(i)}) + "\n")
config = MinhashConfig()
start = time.perf_counter()
for name, pipeline, tasks in [
    ("sigs", [JsonlReader(f"{folder}/in"), MinhashDedupSignature(output_folder=f"{folder}/sigs", config=config)], 1),
    ("buckets", [MinhashDedupBuckets(input_folder=f"{folder}/sigs", output_folder=f"{folder}/buckets", config=config)], config.num_buckets),
    ("clusters", [MinhashDedupCluster(input_folder=f"{folder}/buckets", output_folder=f"{folder}/remove", config=config, save_cluster_id=True)], 1),
]:
    LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=f"{folder}/logs-{name}").run()
out["dedup_seconds"] = time.perf_counter() - start
labels = list(range(len(job["dup_texts"])))
path = f"{folder}/remove/000000.clusters"
if os.path.exists(path):
    raw = open(path, "rb").read()
    for doc, cluster in struct.iter_unpack("<II", raw):
        labels[doc] = len(job["dup_texts"]) + cluster
out["dup_labels"] = labels
print(json.dumps(out))
'''


# ---------------------------------------------------------------- data

def token_f1(predicted: str, gold: str) -> float:
    p, g = Counter(re.findall(r"\w+", predicted.lower())), Counter(re.findall(r"\w+", gold.lower()))
    common = sum((p & g).values())
    if not p or not g or not common:
        return 0.0 if (p or g) else 1.0
    precision, recall = common / sum(p.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


BOILERPLATE_HEAD = "Skip to main content. Home | News | Sport | Business | Weather | Sign in"
BOILERPLATE_TAIL = ("Subscribe to our newsletter for the latest updates. Share this article on Facebook, "
                    "Twitter and email. All rights reserved. Privacy Policy | Terms of Use | Contact us")


def perturb(text: str, kind: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split(" ")
    if kind == "delete":  # 2 % of the words removed
        drop = set(rng.sample(range(len(words)), max(1, len(words) // 50)))
        return " ".join(w for i, w in enumerate(words) if i not in drop)
    if kind == "insert":  # 2 % extra words at random places
        for _ in range(max(1, len(words) // 50)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(vocabulary))
        return " ".join(words)
    if kind == "reorder":  # one paragraph (or sentence) moved elsewhere
        parts = text.split("\n") if text.count("\n") >= 2 else re.split(r"(?<=[.!?]) ", text)
        moved = parts.pop(rng.randrange(len(parts)))
        parts.insert(rng.randrange(len(parts) + 1), moved)
        return ("\n" if text.count("\n") >= 2 else " ").join(parts)
    if kind == "boilerplate":
        return f"{BOILERPLATE_HEAD}\n{text}\n{BOILERPLATE_TAIL}"
    raise ValueError(kind)


def near_duplicate_set(gold: list[str], seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """Base articles (≥ 150 words) plus 0-3 perturbed copies each; labels are the base article's index."""
    rng = random.Random(seed)
    vocabulary = [w for text in gold for w in text.split()][:20000]
    texts, labels, kinds = [], [], []
    for label, text in enumerate(t for t in gold if len(t.split()) >= 150):
        texts.append(text), labels.append(label), kinds.append("original")
        for kind in rng.sample(["delete", "insert", "reorder", "boilerplate"], rng.choice([0, 1, 1, 2, 3])):
            texts.append(perturb(text, kind, rng, vocabulary)), labels.append(label), kinds.append(kind)
    return texts, labels, kinds


def pair_scores(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    same_pred = predicted[:, None] == predicted[None, :]
    same_true = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same_pred, dtype=bool), k=1)
    tp = int((same_pred & same_true & upper).sum())
    fp = int((same_pred & ~same_true & upper).sum())
    fn = int((~same_pred & same_true & upper).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall) if tp else 0.0,
            "true_pairs": tp + fn, "predicted_pairs": tp + fp}


PII_GOLD = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD", "IBAN_CODE": "IBAN",
            "IP_ADDRESS": "IP", "US_SSN": "US_SSN"}


def pii_scores(rows: list[dict], predictions: list[list[tuple[str, int, int]]]) -> dict[str, dict[str, float]]:
    tp, predicted, found, gold = Counter(), Counter(), Counter(), Counter()
    for row, spans in zip(rows, predictions):
        truth = [(PII_GOLD[s["entity_type"]], s["start_position"], s["end_position"])
                 for s in row["spans"] if s["entity_type"] in PII_GOLD]
        for kind, start, end in spans:
            predicted[kind] += 1
            tp[kind] += any(t == kind and start < e and s < end for t, s, e in truth)
        for kind, s, e in truth:
            gold[kind] += 1
            found[kind] += any(t == kind and st < e and s < en for t, st, en in spans)
    return {k: {"precision": tp[k] / predicted[k] if predicted[k] else None, "recall": found[k] / gold[k],
                "gold": gold[k], "predicted": predicted[k]} for k in PII_GOLD.values()}


def redaction_spans(original: str, redacted: str, placeholders: dict[str, str]) -> list[tuple[str, int, int]]:
    """Recover (type, start, end) in the original from a redacted text (for tools that only redact):
    the literal text between placeholders is unchanged, so each replaced span ends where the next literal starts."""
    pattern = re.compile("|".join(re.escape(p) for p in placeholders))
    literals, found = pattern.split(redacted), pattern.findall(redacted)
    spans, position = [], 0
    for i, placeholder in enumerate(found):
        position += len(literals[i])
        following = literals[i + 1]
        end = original.find(following, position + 1) if following else len(original)
        spans.append((placeholders[placeholder], position, end if end > position else len(original)))
        position = spans[-1][2]
    return spans


# ---------------------------------------------------------------- lmforge side

def time_step(step, texts: list[str], meta=None) -> tuple[float, list[bool]]:
    step.setup()
    step.process(Document("warm", texts[0], dict(meta or {})))
    docs = [Document(str(i), t, dict(meta or {})) for i, t in enumerate(texts)]
    start = time.perf_counter()
    keep = [step.process(d) is None for d in docs]
    return time.perf_counter() - start, keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="copies of the extracted pages for the filter timings")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "curate.json"))
    parser.add_argument("--datatrove-python", default=str(ROOT / ".venv-datatrove" / "bin" / "python"))
    args = parser.parse_args()
    root = data_dir()
    records = list(load_records("web_articles"))
    htmls = [read_html(r) for r in records]
    gold = [r["text"] for r in records]
    pii_rows = json.loads((root / "pii" / "synth_dataset_v2.json").read_text())
    results: dict = {"lmforge": {}, "datatrove": {}, "documents": {}}

    # Extraction: every page once, both tools, token F1 against the gold article.
    extract = ExtractHtml()
    seconds, _ = time_step(extract, htmls, {"format": "html"})
    extracted = []
    for html in htmls:
        doc = Document("x", html, {"format": "html"})
        extract.process(doc)
        extracted.append(doc.text if doc.meta["format"] == "text" else "")
    results["lmforge"]["extract_html"] = {"seconds": seconds, "docs": len(htmls)}
    texts = [t for t in extracted if t.strip()] * args.repeats

    steps = {
        "fix_unicode": FixUnicode(), "language": LanguageFilter(), "gopher_quality": GopherQuality(),
        "gopher_repetition": GopherRepetition(), "c4": C4Quality(), "fineweb": FineWebQuality(),
        "pii": PiiRedact(), "pii (EMAIL+IP only)": PiiRedact(types=["EMAIL", "IP"]),
        "decontaminate": Decontaminate(), "bias_terms": BiasTerms(),
    }
    keeps = {}
    for name, step in steps.items():
        seconds, keeps[name] = time_step(step, texts)
        results["lmforge"][name] = {"seconds": seconds, "docs": len(texts)}
    for name, step in {"exact_dedup (signatures)": ExactDedup(), "minhash_dedup (signatures)": MinHashDedup()}.items():
        step.setup()
        start = time.perf_counter()
        for text in texts:
            step.signature(Document("x", text))
        results["lmforge"][name] = {"seconds": time.perf_counter() - start, "docs": len(texts)}

    dup_texts, labels, kinds = near_duplicate_set(gold)

    # DataTrove on the same pages and texts, in its own venv, one process.
    datatrove = None
    if Path(args.datatrove_python).exists():
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as job:
            json.dump({"texts": texts, "htmls": htmls, "pii_texts": [r["full_text"] for r in pii_rows],
                       "dup_texts": dup_texts}, job)
        script = Path(job.name).with_suffix(".py")
        script.write_text(DATATROVE_SIDE)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        process = subprocess.run([args.datatrove_python, str(script), job.name], capture_output=True, text=True, env=env)
        os.unlink(job.name), script.unlink()
        if process.returncode == 0:
            datatrove = json.loads(process.stdout.strip().splitlines()[-1])
            results["datatrove"] = {k: {"seconds": v, "docs": datatrove["docs"][k]} for k, v in datatrove["seconds"].items()}
        else:
            print("DataTrove side failed:\n" + process.stderr[-3000:], file=sys.stderr)

    rows = []
    for name, ours in results["lmforge"].items():
        rate = ours["docs"] / ours["seconds"]
        theirs = results["datatrove"].get(name)
        their_rate = theirs["docs"] / theirs["seconds"] if theirs else None
        agree = None
        if datatrove and name in datatrove["keep"]:
            agree = float(np.mean(np.array(keeps[name]) == np.array(datatrove["keep"][name])))
        ours["docs_per_s"], ours["agreement_with_datatrove"] = rate, agree
        rows.append((name, rate, their_rate, rate / their_rate if their_rate else None, agree))
    print_table("docs/s per core (one process each, same documents)", ["step", "lmforge", "DataTrove", "ratio", "keep/drop agree"], rows)
    shared = [r for r in rows if r[2] and r[0] in ("gopher_quality", "gopher_repetition", "c4", "fineweb")]
    if shared:
        ours_s = sum(len(texts) / r[1] for r in shared)
        theirs_s = sum(len(texts) / r[2] for r in shared)
        results["filter_set_speedup"] = theirs_s / ours_s
        print(f"same filter set (Gopher quality + repetition, C4, FineWeb): lmforge {theirs_s / ours_s:.1f}x DataTrove's docs/s per core")

    # Extraction quality.
    f1_ours = [token_f1(e, g) for e, g in zip(extracted, gold)]
    quality = [("lmforge (trafilatura, precision mode)", float(np.mean(f1_ours)), float(np.median(f1_ours)))]
    results["extraction_token_f1"] = {"lmforge": {"mean": quality[0][1], "median": quality[0][2]}}
    if datatrove:
        f1_theirs = [token_f1(e or "", g) for e, g in zip(datatrove["extracted"], gold)]
        quality.append(("DataTrove Trafilatura extractor", float(np.mean(f1_theirs)), float(np.median(f1_theirs))))
        results["extraction_token_f1"]["datatrove"] = {"mean": quality[1][1], "median": quality[1][2]}
    print_table(f"extraction token F1 vs gold ({len(gold)} pages)", ["extractor", "mean F1", "median F1"], quality)

    # Near-duplicates.
    step = MinHashDedup()
    step.setup()
    start = time.perf_counter()
    signatures = np.stack([step.signature(Document(str(i), t)) for i, t in enumerate(dup_texts)])
    clusters = step._hasher.clusters(signatures)
    dedup_seconds = time.perf_counter() - start
    scores = pair_scores(clusters, np.array(labels))
    by_kind = {}
    original_of = {labels[j]: j for j, k in enumerate(kinds) if k == "original"}
    for kind in ("delete", "insert", "reorder", "boilerplate"):
        members = [i for i, k in enumerate(kinds) if k == kind]
        by_kind[kind] = float(np.mean([clusters[i] == clusters[original_of[labels[i]]] for i in members]))
    results["near_duplicates"] = {"lmforge": {**scores, "seconds": dedup_seconds, "recall_by_perturbation": by_kind},
                                  "documents": len(dup_texts), "clusters": len(set(labels))}
    table_rows = [("lmforge", scores["precision"], scores["recall"], scores["f1"], len(dup_texts) / dedup_seconds)]
    if datatrove:
        theirs = pair_scores(np.array(datatrove["dup_labels"]), np.array(labels))
        results["near_duplicates"]["datatrove"] = {**theirs, "seconds": datatrove["dedup_seconds"]}
        table_rows.append(("DataTrove (3 MinHash stages)", theirs["precision"], theirs["recall"], theirs["f1"],
                           len(dup_texts) / datatrove["dedup_seconds"]))
    print_table(f"near-duplicates: MinHash LSH 14x8, word 5-grams ({len(dup_texts)} documents, {len(set(labels))} labelled clusters)",
                ["tool", "pair precision", "pair recall", "F1", "docs/s"], table_rows)
    print_table("lmforge recall by perturbation", ["copies made by", "recall"], list(by_kind.items()))

    # PII.
    ours_pii = [[(s.type, s.start, s.end) for s in find_pii(r["full_text"])] for r in pii_rows]
    pii = {"lmforge": pii_scores(pii_rows, ours_pii)}
    if datatrove:
        theirs_pii = [redaction_spans(r["full_text"], red, {"\x00EMAIL\x00": "EMAIL", "\x00IP\x00": "IP"})
                      for r, red in zip(pii_rows, datatrove["pii_redacted"])]
        pii["datatrove"] = pii_scores(pii_rows, theirs_pii)
    results["pii"] = pii
    rows = []
    for kind in PII_GOLD.values():
        ours = pii["lmforge"][kind]
        theirs = pii.get("datatrove", {}).get(kind, {})
        rows.append((kind, ours["gold"], ours["precision"], ours["recall"],
                     theirs.get("precision") if kind in ("EMAIL", "IP") else None,
                     theirs.get("recall") if kind in ("EMAIL", "IP") else None))
    print_table(f"PII on the Presidio synthetic set ({len(pii_rows)} sentences)",
                ["type", "gold spans", "lmforge P", "lmforge R", "DataTrove P", "DataTrove R"], rows)
    results["documents"] = {"pages": len(htmls), "filter_docs": len(texts), "repeats": args.repeats}
    save_result(args.out, results, data=[root / "web_articles", root / "pii"],
                peers={"datatrove": (args.datatrove_python, "datatrove")})


if __name__ == "__main__":
    main()
