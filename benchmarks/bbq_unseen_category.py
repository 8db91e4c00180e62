"""A BBQ category lmforge ships no data for (SES), built in BBQ's format from BBQ's own templates, audited with
`lmforge audit --suite bbq --bbq-file` and no code change.

Each template row with explicit word lists (``NAME1: [..]; NAME2: [..]``) gives, for every pair of words, four
rows as BBQ's generator does: ambiguous and disambiguated context × negative and non-negative question. The
answers are the two filled answer phrases and an "unknown" phrasing (rotating through lm-eval's list); the
label is "unknown" in an ambiguous context and the answer the disambiguating context supports otherwise.

    flock /tmp/lmforge-heavy.lock nice .venv/bin/python benchmarks/bbq_unseen_category.py
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path


from lmforge.audit.bbq import UNKNOWN_RESPONSES  # noqa: E402
from lmforge.paths import data_dir  # noqa: E402
from provenance import save_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_NAMES = re.compile(r"NAME1: \[(.*?)\]; NAME2: \[(.*?)\]")


def rows_from_templates(path: Path, words_per_list: int = 2) -> list[dict]:
    rows = []
    for template in csv.DictReader(open(path, encoding="utf-8")):
        names = _NAMES.match(template["Names"].strip())
        if not names:
            continue
        first = [w.strip() for w in names.group(1).split(",")][:words_per_list]
        second = [w.strip() for w in names.group(2).split(",")][:words_per_list]
        for name1 in first:
            for name2 in second:
                fill = lambda text: text.replace("{{NAME1}}", name1).replace("{{NAME2}}", name2).strip()
                negative, non_negative = fill(template["Answer_negative"]), fill(template["Answer_non_negative"])
                info = {fill("{{NAME1}}"): template["NAME1_info"], fill("{{NAME2}}"): template["NAME2_info"]}
                unknown = UNKNOWN_RESPONSES[len(rows) // 4 % len(UNKNOWN_RESPONSES)]
                answers = [unknown, non_negative, negative] if len(rows) // 4 % 2 else [negative, unknown, non_negative]
                answer_info = {f"ans{k}": (["Unknown", "unknown"] if a == unknown else
                                           [a.split()[0], info[name1] if name1 in a.split() else info[name2]])
                               for k, a in enumerate(answers)}
                for condition in ("ambig", "disambig"):
                    context = fill(template["Ambiguous_Context"])
                    if condition == "disambig":
                        context += " " + fill(template["Disambiguating_Context"])
                    for polarity, question, target in (("neg", template["Question_negative_stereotype"], negative),
                                                       ("nonneg", template["Question_non_negative"], non_negative)):
                        rows.append({
                            "example_id": len(rows), "question_index": template["Q_id"], "question_polarity": polarity,
                            "context_condition": condition, "category": template["Category"], "answer_info": answer_info,
                            "additional_metadata": {"subcategory": template["Subcategory"] or "None",
                                                    "stereotyped_groups": json.loads(template["Known_stereotyped_groups"]),
                                                    "version": template["version"], "source": "BBQ templates"},
                            "context": context, "question": question.strip(), "ans0": answers[0], "ans1": answers[1],
                            "ans2": answers[2], "label": answers.index(unknown if condition == "ambig" else target),
                        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--category", default="SES")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bbq_unseen_category.json"))
    args = parser.parse_args()
    templates = data_dir() / "bbq" / "templates" / f"new_templates - {args.category}.csv"
    rows = rows_from_templates(templates)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.category}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        report = Path(tmp) / "audit.json"
        done = subprocess.run([sys.executable, "-m", "lmforge.cli.main", "audit", args.model, "--suite", "bbq",
                               "--bbq-file", str(path), "--json", str(report)], capture_output=True, text=True)
        print(done.stdout[-4000:], done.stderr[-2000:])
        if done.returncode:
            sys.exit(done.returncode)
        result = json.loads(report.read_text())["report"]["bbq"]
    save_result(args.out, {"model": args.model, "category": args.category, "rows": len(rows),
                           "categories": result["categories"]}, models=[args.model], data=[templates])


if __name__ == "__main__":
    main()
