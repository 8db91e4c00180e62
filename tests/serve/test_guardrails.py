import pytest

from lmforge.errors import LmforgeError
from lmforge.serve.guardrails import OutputGuard, RateLimiter, load_filter


def test_token_bucket_allows_burst_then_refills_at_the_rate():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(1.0)  # one request a second
    assert limiter.acquire("b") == 0.0  # buckets are per key
    now[0] = 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0
    now[0] = 100.0
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0  # refill is capped at the burst


def test_guard_never_releases_part_of_a_pii_item_split_across_pieces():
    guard = OutputGuard(load_filter(), redact=True, holdback=32)
    text = "Mail bob.smith@example.org now. " + "More words follow here. " * 4
    released = "".join(guard.feed(text[i:i + 2]) for i in range(0, len(text), 2))
    for prefix_end in range(len(released)):  # nothing sent so far ever held a piece of the address
        assert "bob" not in released[:prefix_end]
    final = released + guard.flush()
    assert final == text.replace("bob.smith@example.org", "<EMAIL>")
    assert guard.pii_counts == {"EMAIL": 1}


def test_guard_cuts_at_a_stop_sequence_split_across_pieces():
    guard = OutputGuard(None, redact=False, stop=["\n\nUser:"], holdback=8)
    out = "".join(guard.feed(piece) for piece in ["Answer is 4.", "\n", "\nUs", "er: next"]) + guard.flush()
    assert out == "Answer is 4." and guard.finish_reason == "stop"


def test_filter_file_errors_name_the_rule(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\nrules:\n  - id: broken\n    pattern: '(unclosed'\n")
    with pytest.raises(LmforgeError, match="broken"):
        load_filter(bad)
    bad.write_text("rules: []\n")
    with pytest.raises(LmforgeError, match="version"):
        load_filter(bad)
    terms = tmp_path / "terms.yaml"
    terms.write_text("version: 2\nrules:\n  - id: words\n    applies_to: [output]\n    terms: [foo bar, baz]\n")
    rules = load_filter(terms)
    assert rules.hits("a FOO BAR b", "output") == ["words"] and rules.hits("foo bar", "input") == []
    assert rules.hits("bazaar", "output") == []  # whole words only
