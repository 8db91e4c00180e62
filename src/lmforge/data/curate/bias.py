"""Bias-term statistics: how often demographic groups are mentioned, and how often in the same sentence as
positive or negative words. It drops nothing; the counts go to the data card, where a group whose mentions
sit next to negative words far more often than another's is a skew to look at before training."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmforge.data.curate.base import Document, Step

# Small hand-made lexicons: term lists per group, in the spirit of the CrowS-Pairs bias types.
DEMOGRAPHIC_TERMS: dict[str, tuple[str, ...]] = {
    "gender/female": ("she", "her", "hers", "woman", "women", "girl", "girls", "mother", "mothers", "daughter",
                      "wife", "sister", "female", "lady", "ladies", "mom", "grandmother", "aunt", "niece"),
    "gender/male": ("he", "him", "his", "man", "men", "boy", "boys", "father", "fathers", "son", "husband",
                    "brother", "male", "gentleman", "gentlemen", "dad", "grandfather", "uncle", "nephew"),
    "religion/christian": ("christian", "christians", "christianity", "catholic", "catholics", "protestant", "church"),
    "religion/muslim": ("muslim", "muslims", "islam", "islamic", "mosque"),
    "religion/jewish": ("jew", "jews", "jewish", "judaism", "synagogue"),
    "religion/hindu": ("hindu", "hindus", "hinduism", "temple"),
    "race/black": ("black", "african", "africans"),
    "race/white": ("white", "caucasian", "european", "europeans"),
    "race/asian": ("asian", "asians", "chinese", "japanese", "korean", "indian"),
    "race/hispanic": ("hispanic", "hispanics", "latino", "latina", "latinos", "mexican", "mexicans"),
    "age/young": ("young", "teen", "teenager", "teenagers", "youth", "kid", "kids", "child", "children"),
    "age/old": ("old", "elderly", "senior", "seniors", "retiree", "retirees", "aged"),
    "disability": ("disabled", "disability", "blind", "deaf", "wheelchair", "autistic"),
    "sexual_orientation": ("gay", "lesbian", "bisexual", "transgender", "queer", "homosexual", "lgbt", "lgbtq"),
}

POSITIVE_WORDS = frozenset((
    "good", "great", "excellent", "smart", "intelligent", "kind", "honest", "successful", "brilliant", "happy",
    "beautiful", "strong", "brave", "talented", "love", "loved", "wonderful", "admired", "respected", "peaceful",
    "generous", "helpful", "hardworking", "skilled", "capable", "friendly", "trustworthy", "caring", "win", "won",
))
NEGATIVE_WORDS = frozenset((
    "bad", "terrible", "stupid", "lazy", "violent", "criminal", "dangerous", "dishonest", "ugly", "weak",
    "angry", "poor", "dirty", "evil", "hate", "hated", "hostile", "incompetent", "corrupt", "aggressive",
    "thief", "thieves", "attack", "killed", "murder", "terrorist", "terrorists", "abuse", "illegal", "failure",
))

_TERM_GROUPS = {term: group for group, terms in DEMOGRAPHIC_TERMS.items() for term in terms}
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z]+")


@dataclass
class BiasTerms(Step):
    name = "bias_terms"

    def process(self, doc: Document):
        for sentence in _SENTENCE.split(doc.text):
            words = _WORD.findall(sentence.lower())
            groups = {_TERM_GROUPS[w] for w in words if w in _TERM_GROUPS}
            if not groups:
                continue
            positive = any(w in POSITIVE_WORDS for w in words)
            negative = any(w in NEGATIVE_WORDS for w in words)
            for group in groups:
                self.count("bias_sentences", group)
                if positive:
                    self.count("bias_positive", group)
                if negative:
                    self.count("bias_negative", group)
        return None
