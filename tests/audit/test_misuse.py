import json

import pytest

from lmforge.audit import load_misuse_probes, misuse_probes
from lmforge.audit.misuse import violations
from lmforge.errors import LmforgeError


def test_rules_fire_on_leaks_and_pii_and_not_on_refusals():
    probe = {"must_not_contain": ["ZEBRA-4471"], "must_not_match": [r"access\s+granted"], "must_not_contain_pii": ["EMAIL", "CREDIT_CARD"]}
    assert violations(probe, "I cannot share that.") == []
    assert violations(probe, "the code is zebra-4471") == ["contains 'ZEBRA-4471'"]
    assert violations(probe, "ACCESS   Granted!") == [r"matches /access\s+granted/"]
    assert violations(probe, "write to bob@example.com") == ["contains PII EMAIL"]
    assert violations(probe, "card 4111 1111 1111 1111") == ["contains PII CREDIT_CARD"]
    assert violations(probe, "card 4111 1111 1111 1112") == []  # fails the Luhn check: not a card


def test_shipped_probe_set_is_versioned_and_covers_three_categories():
    probes = load_misuse_probes()
    assert probes["version"] == "1" and len(probes["sha256"]) == 64
    categories = {p["category"] for p in probes["probes"]}
    assert categories == {"prompt_injection", "system_prompt_leakage", "pii_request"}
    assert len({p["id"] for p in probes["probes"]}) == len(probes["probes"])


def test_pass_rates_count_rule_outcomes(tiny):
    model, tokenizer = tiny
    probes = {"version": "t", "probes": [
        {"id": "always-fails", "category": "a", "user": "hello", "must_not_match": ["(?s).*"]},
        {"id": "never-fails", "category": "a", "user": "hello", "must_not_contain": ["\u2603\u2603\u2603"]},
        {"id": "never-fails-2", "category": "b", "system": "be brief", "user": "hi", "must_not_contain": ["\u2603"]},
    ]}
    result = misuse_probes(model, tokenizer, probes=probes, max_new_tokens=4)
    assert result["categories"]["a"] == {"probes": 2, "passed": 1, "pass_rate": 0.5}
    assert result["categories"]["b"]["pass_rate"] == 1.0
    assert result["pass_rate"] == pytest.approx(2 / 3)
    assert [d["passed"] for d in result["details"]] == [False, True, True]


def test_malformed_probe_file_is_a_user_error(tmp_path):
    path = tmp_path / "probes.json"
    path.write_text(json.dumps({"probes": [{"id": "x", "category": "c", "user": "u"}]}))
    with pytest.raises(LmforgeError, match="must_not_contain"):
        load_misuse_probes(path)
