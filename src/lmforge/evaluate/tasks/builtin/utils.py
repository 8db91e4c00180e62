"""Document preparation for the shipped tasks (lm-eval `!function` hooks; shipped code, trusted)."""

import os
import re
from pathlib import Path


def _clean(text):
    # lm-eval's hellaswag preprocess: WikiHow's "[title]" markers become sentence breaks, other [markers] go.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_docs(dataset):
    return dataset.map(lambda doc: {"query": _clean(doc["ctx"]), "choices": [_clean(e) for e in doc["endings"]],
                                    "gold": int(doc["label"])})


def _data_folder():
    if os.environ.get("LMFORGE_DATA_DIR"):
        return Path(os.environ["LMFORGE_DATA_DIR"])
    from lmforge.paths import data_dir

    return data_dir()


def piqa_docs(dataset):
    labels = (_data_folder() / "piqa" / "valid-labels.lst").read_text().split()
    if len(labels) != len(dataset):
        raise ValueError(f"piqa: {len(labels)} labels for {len(dataset)} questions")
    return dataset.add_column("label", [int(x) for x in labels])
