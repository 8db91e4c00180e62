"""Unicode repair with ftfy: mojibake ("doesnâ€™t"), broken HTML entities, control characters."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.data.curate.base import Document, Step
from lmforge.errors import LmforgeError


@dataclass
class FixUnicode(Step):
    """Repair encoding damage without imposing a house style: curly quotes, full-width punctuation and
    ligatures are real text a model should see, so those ftfy fixes are off unless asked for."""

    name = "fix_unicode"
    normalization: str | None = "NFC"  # canonical composition only: never changes how text looks
    uncurl_quotes: bool = False
    fix_character_width: bool = False
    fix_latin_ligatures: bool = False

    def setup(self) -> None:
        try:
            import ftfy
        except ImportError:
            raise LmforgeError("fix_unicode needs ftfy; `pip install 'lmforge[curate]'`") from None
        self._config = ftfy.TextFixerConfig(normalization=self.normalization, uncurl_quotes=self.uncurl_quotes,
                                            fix_character_width=self.fix_character_width,
                                            fix_latin_ligatures=self.fix_latin_ligatures)
        self._fix = ftfy.fix_text

    def process(self, doc: Document):
        fixed = self._fix(doc.text, self._config)
        if fixed != doc.text:
            self.count("unicode", "fixed_documents")
        doc.text = fixed
        if not doc.text.strip():
            return "empty_after_fix"
        return None
