import json
import random

import pytest

from lmforge.data.curate.pii import find_pii, iban_valid, luhn_valid, redact
from lmforge.errors import LmforgeError
from lmforge.paths import data_dir


def _luhn_reference(digits: str) -> bool:
    # Independent formulation: double every second digit from the right, sum the digits of the products.
    total = sum(int(d) if i % 2 == 0 else sum(map(int, str(2 * int(d)))) for i, d in enumerate(reversed(digits)))
    return total % 10 == 0


def test_luhn_matches_reference_and_known_numbers():
    assert luhn_valid("4111 1111 1111 1111") and luhn_valid("378282246310005") and luhn_valid("6011-1111-1111-1117")
    assert not luhn_valid("4111111111111112")
    rng = random.Random(0)
    for _ in range(2000):
        number = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19)))
        assert luhn_valid(number) == _luhn_reference(number)
    prefix = "453201511283036"
    assert sum(luhn_valid(prefix + str(d)) for d in range(10)) == 1  # exactly one check digit works


def _iban_reference(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    numeric = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return int(numeric) % 97 == 1  # big-integer arithmetic instead of the streaming remainder


def test_iban_mod97_known_and_reference():
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert iban_valid("DE89370400440532013000")
    assert iban_valid("gb42nawi04454264788619")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("DE8937040044053201300")  # right checksum digits, wrong length for DE
    rng = random.Random(1)
    body = "NWBK60161331926819"
    valid_check = [cd for cd in range(100) if iban_valid(f"GB{cd:02d}{body}")]
    assert valid_check == [cd for cd in range(100) if _iban_reference(f"GB{cd:02d}{body}")] and len(valid_check) == 1
    for _ in range(300):
        candidate = "FR" + "".join(rng.choice("0123456789") for _ in range(25))
        assert iban_valid(candidate) == _iban_reference(candidate)


def test_find_and_redact_each_type():
    text = ("Write to ada.lovelace+lm@example.co.uk or call +44 (0)20 7946 0958 / 905-674-3793 x12. "
            "Card 4111-1111-1111-1111, IBAN GB82 WEST 1234 5698 7654 32, host 192.168.0.17 and "
            "2001:db8::8a2e:370:7334, SSN 123-45-6789.")
    redacted, counts = redact(text)
    assert counts == {"EMAIL": 1, "PHONE": 2, "CREDIT_CARD": 1, "IBAN": 1, "IP": 2, "US_SSN": 1}
    for placeholder in ("<EMAIL>", "<PHONE>", "<CREDIT_CARD>", "<IBAN>", "<IP>", "<US_SSN>"):
        assert placeholder in redacted
    assert "7946" not in redacted and "4111" not in redacted and "192.168" not in redacted
    spans = find_pii(text)
    assert all(text[s.start:s.end] == s.text for s in spans)
    assert [s.start for s in spans] == sorted(s.start for s in spans)


def test_not_pii():
    text = ("In 1999 2000 people came; the score was 5040 5 1 17 27. Version 3.2 shipped on 2021-05-12, "
            "at 12:30:45. Order 4111111111111112 failed. Call it 1,000,000 dollars.")
    assert find_pii(text) == []
    assert find_pii("the meeting moved to 12.05.2021") == []


def test_bare_number_needs_phone_context():
    assert find_pii("the street is 9472 7916 long") == []
    assert [s.type for s in find_pii("Can someone call me on 9472 7916")] == ["PHONE"]


def test_unknown_type_is_an_error():
    with pytest.raises(LmforgeError, match="unknown PII type"):
        find_pii("x", types=["SSN"])


def test_presidio_synthetic_set_precision_recall(require):
    path = data_dir() / "pii" / "synth_dataset_v2.json"
    require(path.exists(), "shared PII data set not present")
    gold_types = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD", "IBAN_CODE": "IBAN"}
    tp, predicted, found, gold = ({t: 0 for t in gold_types.values()} for _ in range(4))
    for row in json.loads(path.read_text()):
        spans = [(gold_types[s["entity_type"]], s["start_position"], s["end_position"])
                 for s in row["spans"] if s["entity_type"] in gold_types]
        hits = [p for p in find_pii(row["full_text"]) if p.type in gold_types.values()]
        for p in hits:
            predicted[p.type] += 1
            tp[p.type] += any(t == p.type and p.start < e and s < p.end for t, s, e in spans)
        for t, s, e in spans:
            gold[t] += 1
            found[t] += any(t == p.type and p.start < e and s < p.end for p in hits)
    for kind in gold_types.values():
        assert tp[kind] / predicted[kind] >= 0.9, kind
        assert found[kind] / gold[kind] >= 0.9, kind


def test_names_need_presidio_and_say_how():
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        with pytest.raises(LmforgeError, match="pip install presidio-analyzer"):
            find_pii("Ada Lovelace wrote it", names=True)
    else:
        pytest.skip("presidio is installed; the error path does not apply")
