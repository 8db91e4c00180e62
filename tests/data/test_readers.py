"""One set of format readers serves the corpus loader and the curation pipeline: the same files give both the same
documents, and the same bad line is a stop for one and a recorded drop for the other."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data import read_documents
from lmforge.data.curate import Input
from lmforge.data.curate.readers import ShardReader
from lmforge.data.readers import BadRecord, Record, file_format, read_file
from lmforge.errors import LmforgeError


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "b1", "text": "second"}) + "\n\n"
                                      + json.dumps({"id": "b2", "text": "third"}) + "\n")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": "fourth"}).encode() + b"\n"))
    pq.write_table(pa.table({"text": ["x one", "x two"], "id": ["p1", "p2"]}), tmp_path / "d.parquet")
    return [tmp_path / n for n in ("a.txt", "b.jsonl", "c.jsonl.gz", "d.parquet")]


def test_corpus_and_curation_read_the_same_documents(files):
    corpus = [text for f in files for text in read_documents(f)]
    reader = ShardReader(Input(paths=[str(f) for f in files]))
    curated = [doc.text for doc in reader.documents([str(f) for f in files])]
    assert corpus == curated == ["first document\n", "second", "third", "fourth", "x one", "x two"]
    ids = [doc.id for doc in ShardReader(Input(paths=[str(files[1])])).documents([str(files[1])])]
    assert ids == ["b1", "b2"]


def test_a_bad_line_is_a_record_for_the_caller_to_judge(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": broken\n{"body": "x"}\n{"text": 3}\n' + b'{"text": "caf\xe9"}\n')
    records = list(read_file(bad, file_format(bad)))
    assert [type(r) for r in records] == [Record, BadRecord, BadRecord, BadRecord, BadRecord]
    assert [r.reason for r in records[1:]] == ["malformed_json", "missing_text_field", "text_not_a_string", "invalid_utf8"]
    assert records[1].where == f"{bad}:2" and records[4].where == f"{bad}:5"
    with pytest.raises(LmforgeError, match=r"bad\.jsonl:2: malformed JSON.*--skip-bad-lines"):
        list(read_documents(bad))
    reader = ShardReader(Input(paths=[str(bad)]))
    assert [d.text for d in reader.documents([str(bad)])] == ["ok"]
    assert [d.reason for d in reader.drops] == ["malformed_json", "missing_text_field", "text_not_a_string", "invalid_utf8"]


def test_raw_web_formats_are_for_curation_only(tmp_path):
    page = tmp_path / "p.html"
    page.write_bytes("<p>caf\xe9</p>".encode("cp1252"))
    (record,) = read_file(page, file_format(page))
    assert record.text == "<p>café</p>" and record.meta["encoding"] == "cp1252"
    with pytest.raises(LmforgeError, match="extract its text with `lmforge data run`"):
        list(read_documents(page))
