import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data.curate import Document, ExtractHtml, FixUnicode, Input, LanguageFilter
from lmforge.data.curate.readers import ShardReader
from lmforge.errors import LmforgeError

PAGE = ("<html><head><title>t</title></head><body><nav>Home | About | Contact</nav><article><h1>Rivers</h1>"
        + "".join(f"<p>The river number {i} runs through the valley and feeds the orchards with cold water "
                  f"from the mountains every spring, and people of the town walk along it.</p>" for i in range(6))
        + "</article><footer>Copyright 2024</footer></body></html>")


def read(paths, **options):
    reader = ShardReader(Input(paths=[str(p) for p in paths], **options))
    return list(reader.documents([str(p) for p in paths])), reader


def test_every_format_including_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("plain text document")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"id": "x", "body": {"text": "nested field"}}) + "\n")
    pq.write_table(pa.table({"text": ["from parquet", None], "id": ["p1", "p2"]}), tmp_path / "c.parquet")
    (tmp_path / "d.html").write_text(PAGE)
    docs, reader = read([tmp_path / "a.txt", tmp_path / "c.parquet", tmp_path / "d.html"])
    assert [d.text for d in docs[:2]] == ["plain text document", "from parquet"]
    assert docs[1].id == "p1" and docs[2].meta["format"] == "html"
    assert reader.stats.dropped == {"text_not_a_string": 1}
    docs, _ = read([tmp_path / "b.jsonl.gz"], text_field="body.text")
    assert [(d.id, d.text) for d in docs] == [("x", "nested field")]


def test_warc_records(tmp_path, optional):
    warcio = optional("warcio", "curate")
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = tmp_path / "crawl.warc.gz"
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, content_type in (("http://a.example/", "text/html; charset=utf-8"), ("http://b.example/x.png", "image/png")):
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.0")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(PAGE.encode()),
                                                          http_headers=headers))
    assert warcio
    docs, _ = read([path])
    assert len(docs) == 1 and docs[0].meta["url"] == "http://a.example/" and "<article>" in docs[0].text


def test_non_utf8_and_unknown_format(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    docs, reader = read([tmp_path / "bad.txt"])
    assert docs == [] and reader.drops[0].reason == "invalid_utf8" and "byte 3 (0xe9)" in reader.drops[0].detail
    with pytest.raises(LmforgeError, match=r"bad\.txt: byte 3.*on_error: skip"):
        read([tmp_path / "bad.txt"], on_error="raise")
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a whole line"}\n' * 50)[:40])
    docs, reader = read([tmp_path / "cut.jsonl.gz"])
    assert reader.drops[-1].reason == "unreadable_file" and "cut.jsonl.gz" in reader.drops[-1].detail
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(LmforgeError, match="unknown format"):
        read([tmp_path / "x.docx"])
    with pytest.raises(LmforgeError, match="on_error"):
        Input(paths=["x"], on_error="ignore")


def test_extract_fix_and_language_steps():
    extract = ExtractHtml()
    extract.setup()
    doc = Document("p", PAGE, {"format": "html"})
    assert extract.process(doc) is None
    assert "orchards" in doc.text and "Home | About" not in doc.text and "<p>" not in doc.text
    assert extract.process(Document("e", "<html><body></body></html>", {"format": "html"})) == "no_main_text"
    fix = FixUnicode()
    fix.setup()
    mojibake = Document("m", "The Mona Lisa doesnâ€™t have eyebrows.")
    fix.process(mojibake)
    assert mojibake.text == "The Mona Lisa doesn’t have eyebrows."
    language = LanguageFilter(languages=["en"])
    language.setup()
    assert language.process(Document("en", "The weather is lovely today and we walk to the river.")) is None
    assert language.process(Document("de", "Das Wetter ist heute schön und wir gehen zum Fluss.")) == ("language", "de")
    with pytest.raises(LmforgeError, match="unknown language"):
        LanguageFilter(languages=["english"]).setup()
