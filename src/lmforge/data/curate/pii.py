"""PII detection and redaction: emails, phone numbers, IP addresses, credit cards, IBANs, US SSNs.

Pattern detectors with checksums where the format has one (Luhn for cards,
ISO 7064 mod-97 for IBANs), so a random 16-digit number is not a card.
Usable on its own (model outputs in the audit, responses in the server):

    >>> redact("mail me at ada@example.org")
    ('mail me at <EMAIL>', {'EMAIL': 1})

Person names need a statistical model; ``find_pii(text, names=True)`` asks
Presidio for them when it is installed (``pip install presidio-analyzer`` and
a spaCy English model) and never imports it otherwise.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable

from lmforge.data.curate.base import Document, Step
from lmforge.errors import LmforgeError

# Detection order is priority order: when spans overlap, the earlier type wins
# (an IBAN contains digit runs that look like phone numbers; an IP looks like a dotted phone).
PII_TYPES = ("EMAIL", "IBAN", "CREDIT_CARD", "IP", "US_SSN", "PHONE")


@dataclass(frozen=True)
class PiiSpan:
    type: str
    start: int
    end: int
    text: str


# ---------------------------------------------------------------- validators

def luhn_valid(number: str) -> bool:
    """The Luhn (mod 10) checksum of payment card numbers; separators are ignored."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# ISO 13616 lengths per country (SWIFT IBAN registry); a length mismatch is not an IBAN.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_valid(iban: str) -> bool:
    """ISO 7064 mod-97-10: move the first four characters to the end, letters to 10..35, remainder 1."""
    compact = re.sub(r"[\s-]", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for char in rearranged:
        value = int(char, 36)  # '0'..'9' -> 0..9, 'A'..'Z' -> 10..35
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


def ssn_valid(ssn: str) -> bool:
    """US SSN issuance rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    area, group, serial = ssn.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# ---------------------------------------------------------------- patterns

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Card numbers: a plain run of 12-19 digits, or groups of four (Visa/MC/Discover) or 4-6-5 (Amex)
# with one consistent separator.
_CARD = re.compile(
    r"(?<![\w+-])(?:\d{12,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5})(?![\w]|-\d)"
)
_IBAN = re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?(?![\w])")
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w]|-\d)")
# Phone numbers in national and international writing: optional +CC / 00CC, an optional "(0)" trunk
# prefix, an optional area code in parentheses, digit groups joined by one space, dot or hyphen,
# and an optional extension ("x123", "ext. 12").
_PHONE = re.compile(
    r"(?<![\w+.\-/:])"
    r"(?:(?:\+|00)\d{1,3}[ .-]?)?"
    r"(?:\(0\)[ .-]?)?"
    r"(?:\(\d{1,5}\)[ .-]?)?"
    r"\d{1,12}(?:[ .-]\d{1,8}){0,5}"
    r"(?:[ ]?(?:x|ext\.?|extension)[ ]?\d{1,5})?"
    r"(?![\w]|[.-]\d|/)",
)
_DATE_LIKE = re.compile(r"(?:19|20)\d\d[.-](?:0?[1-9]|1[0-2])[.-](?:0?[1-9]|[12]\d|3[01])|(?:0?[1-9]|[12]\d|3[01])[.-](?:0?[1-9]|1[0-2])[.-](?:19|20)\d\d")
_PHONE_CONTEXT = re.compile(
    r"\b(?:phone|tel|telephone|call|calls|mobile|cell|fax|desk|office|contact|reach|text|sms|whatsapp|"
    r"number|answering|message|messages|registered|dial|ring|hotline)\b",
    re.IGNORECASE,
)


def _phone_ok(text: str, start: int, end: int) -> bool:
    core = re.split(r"[ ]?(?:x|ext\.?|extension)[ ]?\d", text[start:end], maxsplit=1)[0]
    groups = re.findall(r"\d+", core)
    digits = sum(len(g) for g in groups)
    if not 7 <= digits <= 15:  # E.164 allows at most 15 digits; local numbers have at least 7
        return False
    if _DATE_LIKE.fullmatch(core):
        return False
    if core.startswith(("+", "00", "(")):
        return True
    if any(len(g) < 2 for g in groups):  # "5040 5 1 17 27" is a table row; national numbers group 2+ digits
        return False
    if len(groups) >= 3:  # "0490 75 40 81": a phone, unless it starts like a date ("2019 12 31")
        return not re.fullmatch(r"(?:19|20)\d\d", groups[0])
    if len(groups) == 1 and digits < 9:  # a bare 7-8 digit run is an amount or an id far more often
        return False
    # One or two bare groups ("9472 7916", "9498777106") look like street numbers, amounts or ids
    # as often as phones: keep them only next to a phone word, as Presidio's context enhancer does.
    return bool(_PHONE_CONTEXT.search(text, max(0, start - 40), start)) or bool(
        _PHONE_CONTEXT.search(text, end, min(len(text), end + 12)))


def _candidates(text: str, kind: str) -> Iterable[tuple[int, int]]:
    for may_hold, pattern, valid in _DETECTORS[kind]:
        if may_hold is not None and not may_hold(text):
            continue
        for m in pattern.finditer(text):
            if valid is None or valid(text, m):
                yield m.span()


def _is_ipv6(candidate: str) -> bool:
    if not any(c.isdigit() for c in candidate) or len(candidate.replace(":", "")) < 4:
        return False  # "a:b:c" or a time "12:30:45" is not an address
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return not re.fullmatch(r"\d{1,2}:\d{2}(?::\d{2})?", candidate)


# Per type: (cheap test that the text may hold one, pattern, check of each match or None). The tests
# skip most regex scans (an email needs an "@"); checksums and context turn look-alikes away.
_HEX_COLON = re.compile(r"[0-9A-Fa-f]{0,4}::?[0-9A-Fa-f]{1,4}:")
_DETECTORS = {
    "EMAIL": [(lambda text: "@" in text, _EMAIL, None)],
    "IP": [(lambda text: "." in text, _IPV4, None),
           (_HEX_COLON.search, _IPV6_CANDIDATE, lambda text, m: _is_ipv6(m.group()))],
    "CREDIT_CARD": [(None, _CARD, lambda text, m: luhn_valid(m.group()))],
    "IBAN": [(None, _IBAN, lambda text, m: iban_valid(m.group()))],
    "US_SSN": [(lambda text: "-" in text, _SSN, lambda text, m: ssn_valid(m.group()))],
    "PHONE": [(None, _PHONE, lambda text, m: _phone_ok(text, *m.span()))],
}


# ---------------------------------------------------------------- API

def find_pii(text: str, types: Iterable[str] | None = None, names: bool = False) -> list[PiiSpan]:
    """Non-overlapping PII spans in ``text``, sorted by start; overlaps go to the higher-priority type."""
    wanted = tuple(types) if types is not None else PII_TYPES
    unknown = [t for t in wanted if t not in PII_TYPES and t != "PERSON"]
    if unknown:
        raise LmforgeError(f"unknown PII type(s) {', '.join(unknown)}; choose from {', '.join(PII_TYPES + ('PERSON',))}")
    taken: list[tuple[int, int]] = []
    spans: list[PiiSpan] = []
    found = [(kind, span) for kind in PII_TYPES if kind in wanted for span in _candidates(text, kind)]
    if names or "PERSON" in wanted:
        found += [("PERSON", span) for span in _presidio_names(text)]
    for kind, (start, end) in found:
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        spans.append(PiiSpan(kind, start, end, text[start:end]))
    return sorted(spans, key=lambda s: s.start)


def redact(text: str, types: Iterable[str] | None = None, names: bool = False) -> tuple[str, dict[str, int]]:
    """Replace every PII span by a typed placeholder (``<EMAIL>``, ``<PHONE>`` …); returns the counts per type."""
    spans = find_pii(text, types, names)
    counts: dict[str, int] = {}
    pieces, cursor = [], 0
    for span in spans:
        pieces += [text[cursor:span.start], f"<{span.type}>"]
        cursor = span.end
        counts[span.type] = counts.get(span.type, 0) + 1
    pieces.append(text[cursor:])
    return "".join(pieces), counts


_ANALYZER = None


def _presidio_names(text: str) -> list[tuple[int, int]]:
    global _ANALYZER
    if _ANALYZER is None:
        try:
            from presidio_analyzer import AnalyzerEngine
        except ImportError:
            raise LmforgeError("name detection needs Presidio; `pip install presidio-analyzer` and "
                               "`python -m spacy download en_core_web_lg`, or leave names off") from None
        _ANALYZER = AnalyzerEngine()
    return [(r.start, r.end) for r in _ANALYZER.analyze(text=text, entities=["PERSON"], language="en")]


# ---------------------------------------------------------------- pipeline step


@dataclass
class PiiRedact(Step):
    """Replace PII by typed placeholders (``action: redact``) or drop documents that contain any (``drop``)."""

    name = "pii"
    types: list = field(default_factory=lambda: list(PII_TYPES))
    names: bool = False
    action: str = "redact"

    def __post_init__(self) -> None:
        if self.action not in ("redact", "drop"):
            raise ValueError(f"action must be 'redact' or 'drop', not {self.action!r}")

    def process(self, doc: Document):
        redacted, counts = redact(doc.text, self.types, self.names)
        for kind, n in counts.items():
            self.count("pii", kind, n)
            self.count("pii_documents", kind)
        if counts and self.action == "drop":
            return "pii", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        doc.text = redacted
        return None
