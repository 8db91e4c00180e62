"""HTML to main text with trafilatura (boilerplate, menus and comments removed; runs offline)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lmforge.data.curate.base import Document, Step
from lmforge.errors import LmforgeError


@dataclass
class ExtractHtml(Step):
    """Replace the HTML of documents read from HTML/WARC (``meta["format"] == "html"``) by their main text."""

    name = "extract_html"
    favor_precision: bool = True
    include_tables: bool = False
    include_comments: bool = False

    def setup(self) -> None:
        try:
            import trafilatura
        except ImportError:
            raise LmforgeError("extract_html needs trafilatura; `pip install 'lmforge[curate]'`") from None
        self._extract = trafilatura.extract
        # a page without main text is recorded as a drop; trafilatura's own warning would only repeat it
        logging.getLogger("trafilatura").setLevel(logging.ERROR)

    def process(self, doc: Document):
        if doc.meta.get("format") != "html":
            return None
        text = self._extract(doc.text, favor_precision=self.favor_precision, include_tables=self.include_tables,
                             include_comments=self.include_comments, deduplicate=False)
        if not text or not text.strip():
            return "no_main_text"
        doc.text = text
        doc.meta["format"] = "text"
        return None
