"""Language identification with py3langid (a naive Bayes model over byte n-grams, 97 languages, bundled in
the wheel, so it runs offline)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.data.curate.base import Document, Step
from lmforge.errors import LmforgeError


@dataclass
class LanguageFilter(Step):
    """Keep documents whose language is in ``languages`` with probability ≥ ``min_score``.

    0.65 is FineWeb's threshold for its fastText English classifier (Penedo et al. 2024, section 3.1).
    ``languages: []`` keeps every language and only labels the documents (``meta["language"]``).
    """

    name = "language"
    languages: list = field(default_factory=lambda: ["en"])
    min_score: float = 0.65
    max_chars: int = 10_000  # the first 10k characters decide; longer pages rarely change language

    def setup(self) -> None:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            raise LmforgeError("the language step needs py3langid; `pip install 'lmforge[curate]'`") from None
        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        unknown = set(self.languages) - set(self._identifier.labels)
        if unknown:
            raise LmforgeError(f"language step: unknown language code(s) {', '.join(sorted(unknown))}; use ISO 639-1 codes such as en, de, fr")

    def process(self, doc: Document):
        language, score = self._identifier.classify(doc.text[: self.max_chars])
        doc.meta["language"], doc.meta["language_score"] = language, round(float(score), 4)
        self.count("languages", language)
        if self.languages and language not in self.languages:
            return "language", language
        if self.languages and score < self.min_score:
            return "low_language_score", f"{language} {score:.3f}"
        return None
