import gzip
import json

import pytest
import torch

from lmforge.data import calibration_batches, corpus_from_path, corpus_from_texts, load_corpus, read_documents
from lmforge.errors import LmforgeError


def test_readers_for_each_format(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n")
    (tmp_path / "b.jsonl").write_text('{"body": {"text": "second"}}\n\n{"body": {"text": "third"}}\n')
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"body": {"text": "fourth"}}) + "\n")
    assert list(read_documents(tmp_path / "a.txt")) == ["first document\n"]
    assert list(read_documents(tmp_path / "b.jsonl", text_field="body.text")) == ["second", "third"]
    assert list(read_documents(tmp_path / "c.jsonl.gz", text_field="body.text")) == ["fourth"]


def test_parquet_and_saved_hf_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    pq.write_table(pa.table({"content": ["x one", "x two", None]}), tmp_path / "d.parquet")
    assert list(read_documents(tmp_path / "d.parquet", text_field="content")) == ["x one", "x two"]
    Dataset.from_dict({"text": ["hf one", "hf two"]}).save_to_disk(str(tmp_path / "hf"))
    assert list(corpus_from_path(tmp_path / "hf").documents()) == ["hf one", "hf two"]
    with pytest.raises(LmforgeError, match="no column 'content'"):
        list(read_documents(tmp_path / "hf", text_field="content"))


def test_bad_input_errors_name_the_problem(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(LmforgeError, match="not valid UTF-8"):
        list(read_documents(tmp_path / "latin1.txt"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(LmforgeError, match=r"bad.jsonl:2: malformed JSON"):
        list(read_documents(tmp_path / "bad.jsonl"))
    assert list(read_documents(tmp_path / "bad.jsonl", on_error="skip")) == ["ok"]
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(LmforgeError, match="is empty"):
        list(corpus_from_path(tmp_path / "empty.txt").documents())
    with pytest.raises(LmforgeError, match="corpus not found"):
        corpus_from_path(tmp_path / "nope.txt")
    with pytest.raises(LmforgeError, match="unknown data set"):
        load_corpus("wikitext103")


def test_wikitext2_articles_concatenate_back_to_the_file(data_root):
    corpus = load_corpus("wikitext2")
    articles = list(corpus.documents())
    assert len(articles) == 60
    assert all(a.startswith(" = ") for a in articles)
    assert corpus.text() == (data_root / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8")


def test_calibration_batches_are_seeded_distinct_windows(tiny):
    _, tokenizer = tiny
    corpus = corpus_from_texts(["Water carries sand to the sea. " * 60])
    a = calibration_batches(tokenizer, corpus, n_samples=4, seqlen=16, seed=0)
    b = calibration_batches(tokenizer, corpus, n_samples=4, seqlen=16, seed=0)
    c = calibration_batches(tokenizer, corpus, n_samples=4, seqlen=16, seed=1)
    assert a.shape == (4, 16) and torch.equal(a, b) and not torch.equal(a, c)
    ids = tokenizer(corpus.text(), add_special_tokens=False)["input_ids"]
    for row in a.tolist():  # every sample is a real contiguous slice of the corpus
        assert any(ids[s : s + 16] == row for s in range(len(ids) - 15))
    with pytest.raises(LmforgeError, match="enough for"):
        calibration_batches(tokenizer, corpus, n_samples=1000, seqlen=16)


def test_the_tuning_split_never_overlaps_the_calibration_sample():
    """With token i = position i, windows are position ranges, so overlap is checked exactly."""
    from lmforge.data import tuning_split

    positions = lambda text, **_: {"input_ids": list(range(len(text)))}  # noqa: E731
    corpus = corpus_from_texts(["x" * 5000])
    calibration = calibration_batches(positions, corpus, n_samples=16, seqlen=64, seed=3)
    tuning = tuning_split(positions, corpus, 20, 64, calibration_samples=16, seed=3)
    assert tuning.shape == (20, 64)
    seen = set(calibration.flatten().tolist())
    assert seen.isdisjoint(tuning.flatten().tolist())
    assert len(set(tuning.flatten().tolist())) == 20 * 64  # distinct windows
    assert torch.equal(tuning, tuning_split(positions, corpus, 20, 64, calibration_samples=16, seed=3))
    with pytest.raises(LmforgeError, match="enough for 78 samples of 64; asked for 96"):
        tuning_split(positions, corpus, 80, 64, calibration_samples=16, seed=3)
