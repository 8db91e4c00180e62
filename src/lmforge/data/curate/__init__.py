"""Curation: raw web pages to a clean, deduplicated, PII-free, decontaminated corpus with a data card.

    from lmforge.data.curate import Pipeline
    stats = Pipeline.from_yaml("pipeline.yaml").run(workers=2)

Steps (YAML names): extract_html, fix_unicode, language, gopher_quality, gopher_repetition, c4, fineweb,
exact_dedup, minhash_dedup, pii, decontaminate, bias_terms, counterfactual_augment. Heavy libraries (trafilatura, ftfy, py3langid)
load in ``Step.setup``, never at import.
"""

from lmforge.data.curate.base import STEPS, Document, Drop, GlobalStep, Step, StepStats, build_step
from lmforge.data.curate.bias import BiasTerms
from lmforge.data.curate.cda import CounterfactualAugment, WordPairs, load_word_pairs, swap
from lmforge.data.curate.clean import FixUnicode
from lmforge.data.curate.decontaminate import Decontaminate, NgramIndex
from lmforge.data.curate.dedup import ExactDedup, MinHashDedup
from lmforge.data.curate.extract import ExtractHtml
from lmforge.data.curate.language import LanguageFilter
from lmforge.data.curate.minhash import MinHasher, candidate_probability, estimated_jaccard
from lmforge.data.curate.pii import PiiRedact, PiiSpan, find_pii, iban_valid, luhn_valid, redact
from lmforge.data.curate.pipeline import Output, Pipeline, load_stats
from lmforge.data.curate.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from lmforge.data.curate.ray_engine import RayRun  # registers --engine ray
from lmforge.data.curate.readers import Input

__all__ = [
    "STEPS", "BiasTerms", "C4Quality", "CounterfactualAugment", "Decontaminate", "Document", "Drop", "ExactDedup", "ExtractHtml",
    "FineWebQuality", "FixUnicode", "GlobalStep", "GopherQuality", "GopherRepetition", "Input", "LanguageFilter",
    "MinHashDedup", "MinHasher", "NgramIndex", "Output", "PiiRedact", "PiiSpan", "Pipeline", "RayRun", "Step",
    "StepStats", "WordPairs", "build_step", "candidate_probability", "estimated_jaccard", "find_pii", "iban_valid",
    "load_stats", "load_word_pairs", "luhn_valid", "redact", "swap",
]
