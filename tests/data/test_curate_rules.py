"""Each quality rule at its threshold: a document exactly at the published limit, and one just past it."""

from lmforge.data.curate import C4Quality, Document, FineWebQuality, GopherQuality, GopherRepetition

FILLER = ["apple", "grape", "lemon", "mango", "peach", "melon", "berry", "olive", "guava", "prune"]


def verdict(step, text):
    doc = Document("d", text)
    return step.process(doc), doc


def reason(step, text):
    result, _ = verdict(step, text)
    return result[0] if isinstance(result, tuple) else result


def gopher_words(n, stop=2):
    """n words of 5 letters, ``stop`` of them replaced by stop words (length 3)."""
    words = [FILLER[i % len(FILLER)] for i in range(n)]
    for i in range(stop):
        words[i] = "the" if i % 2 == 0 else "and"
    return words


def test_gopher_word_count_edges():
    step = GopherQuality()
    assert reason(step, " ".join(gopher_words(50))) is None
    assert reason(step, " ".join(gopher_words(49))) == "too_few_words"
    assert reason(GopherQuality(max_words=60), " ".join(gopher_words(61))) == "too_many_words"


def test_gopher_mean_word_length_edges():
    step = GopherQuality()
    exactly_three = ["the", "and"] + ["cat"] * 48
    assert reason(step, " ".join(exactly_three)) is None
    assert reason(step, " ".join(exactly_three[:-1] + ["ox"])) == "short_mean_word_length"
    ten = ["the", "and"] + ["abcdefghijklmnopq"] * 2 + ["abcdefghij"] * 46  # (3+3+17+17+460)/50 = 10.0
    assert reason(step, " ".join(ten)) is None
    assert reason(step, " ".join(ten[:-1] + ["abcdefghijk"])) == "long_mean_word_length"


def test_gopher_symbol_ratio_edges():
    step = GopherQuality()
    words = " ".join(gopher_words(50))
    assert reason(step, words + " #" * 5) is None           # 5 / 50 = 0.1 is not above 0.1
    assert reason(step, words + " #" * 6) == "hash_ratio"
    assert reason(step, words + " …" * 6) == "ellipsis_ratio"


def test_gopher_bullet_and_ellipsis_line_edges():
    step = GopherQuality()
    lines = [" ".join(gopher_words(10)) for _ in range(10)]
    nine_bullets = ["• " + line for line in lines[:9]] + lines[9:]
    assert reason(step, "\n".join(nine_bullets)) is None     # 0.9 is not above 0.9
    assert reason(step, "\n".join("• " + line for line in lines)) == "bullet_lines"
    three = [line + " ..." if i < 3 else line for i, line in enumerate(lines)]
    assert reason(step, "\n".join(three)) is None            # 0.3 is not above 0.3
    four = [line + " ..." if i < 4 else line for i, line in enumerate(lines)]
    assert reason(step, "\n".join(four)) == "ellipsis_lines"


def test_gopher_alpha_and_stop_word_edges():
    step = GopherQuality()
    words = gopher_words(50)
    eighty = words[:40] + ["1234"] * 10                      # 40 / 50 = 0.8 words with a letter
    assert reason(step, " ".join(eighty)) is None
    assert reason(step, " ".join(words[:39] + ["1234"] * 11)) == "alpha_words"
    assert reason(step, " ".join(gopher_words(50, stop=1))) == "stop_words"


def only(**kwargs):
    """A repetition filter with every rule off except the ones given."""
    off = dict(max_duplicate_lines=1.0, max_duplicate_paragraphs=1.0, max_duplicate_line_chars=1.0,
               max_duplicate_paragraph_chars=1.0, top_ngrams={}, duplicate_ngrams={})
    return GopherRepetition(**{**off, **kwargs})


def unique_words(n, start=0):
    return [f"w{i:03d}" for i in range(start, start + n)]  # 4 characters each


def test_gopher_duplicate_line_fraction_edges():
    step = only(max_duplicate_lines=0.3)
    unique = [" ".join(unique_words(5, 5 * i)) for i in range(7)]
    assert reason(step, "\n".join(unique + [unique[0]] * 3)) is None          # 3 of 10 = 0.3
    assert reason(step, "\n".join(unique[:6] + [unique[0]] * 4)) == "duplicate_lines"
    step = only(max_duplicate_paragraphs=0.3)
    assert reason(step, "\n\n".join(unique + [unique[0]] * 3)) is None
    assert reason(step, "\n\n".join(unique[:6] + [unique[0]] * 4)) == "duplicate_paragraphs"


def test_gopher_top_ngram_edges():
    step = only(top_ngrams={2: 0.2})
    # 50 words of 4 characters = 200 word characters; the bigram "aaaa bbbb" covers 8 characters per copy.
    def doc(copies):
        return " ".join(["aaaa", "bbbb"] * copies + unique_words(50 - 2 * copies))
    assert reason(step, doc(5)) is None       # 40 / 200 = 0.20
    assert reason(step, doc(6)) == "top_2gram"


def test_gopher_duplicate_ngram_edges():
    step = only(duplicate_ngrams={5: 0.15})
    gram = ["aaaa", "bbbb", "cccc", "dddd", "eeee"]
    def doc(copies):  # 100 words, 400 characters; each repeat of the 5-gram adds 20 repeated characters
        words = []
        filler = iter(unique_words(100))
        for _ in range(copies):
            words += gram + [next(filler)]
        return " ".join(words + [next(filler) for _ in range(100 - len(words))])
    assert reason(step, doc(4)) is None                # 3 repeats: 60 / 400 = 0.15
    assert reason(step, doc(5)) == "duplicate_5grams"  # 4 repeats: 80 / 400 = 0.20


def test_c4_line_rules_and_sentence_minimum():
    step = C4Quality()
    good = [f"This is sentence number {i} here." for i in range(5)]
    assert reason(step, "\n".join(good)) is None
    assert reason(step, "\n".join(good[:4])) == "too_few_sentences"
    result, doc = verdict(step, "\n".join(good + ["Two words.", "No terminal punctuation at all",
                                                  "Please enable JavaScript to view this page.",
                                                  "Read our privacy policy before you continue.", "Wait for it..."]))
    assert result is None and doc.text == "\n".join(good)
    assert reason(step, "\n".join(good + ["Three words here."])) is None
    assert reason(step, "\n".join(good + ["Lorem ipsum dolor sit amet."])) == "lorem_ipsum"
    assert reason(step, "\n".join(good + ["The function f {x} is odd."])) == "curly_bracket"
    assert reason(step, "\n".join(good[:4] + ["Cited claim here.[12]"])) is None  # citation removed, line kept


def test_fineweb_punctuation_edges():
    step = FineWebQuality(max_duplicate_line_chars=1.0, max_newlines_per_word=10)
    punct = [f"line number {i} ends with a full stop here." for i in range(25)]
    bare = [f"line number {i} has no end mark at all here" for i in range(25)]
    assert reason(step, "\n".join(punct[:3] + bare[3:])) == "punctuated_lines"   # 3 / 25 = 0.12
    assert reason(step, "\n".join(punct[:4] + bare[4:])) is None                 # 0.16


def test_fineweb_short_line_edges():
    step = FineWebQuality(max_duplicate_line_chars=1.0)
    short = [f"Short line {i:02d}." for i in range(67)]
    long = [f"This is a longer line, number {i:02d}, of prose." for i in range(33)]
    assert reason(step, "\n".join(short + long)) == "short_lines"               # 67 / 100
    assert reason(step, "\n".join(short[:66] + long + [long[0] + " More."])) is None  # 66 / 100


def test_fineweb_duplicate_line_chars_edges():
    step = FineWebQuality()
    lines = [f"Line {i:03d} is exactly forty chars long ok." for i in range(99)]
    assert all(len(line) == 40 for line in lines)
    assert reason(step, "\n".join(lines + [lines[0]])) == "duplicate_line_chars"       # 40 / 4000 = 0.01
    extra = "Line 999 is another forty chars long ok."
    assert reason(step, "\n".join(lines + [extra, lines[0]])) is None                  # 40 / 4040 < 0.01


def test_fineweb_list_ratio_edges():
    step = FineWebQuality(max_short_lines=1.01)
    # 3 newlines; "one two three." is 4 tokens (the full stop counts, as in NLTK's tokenizer)
    assert reason(step, "one two three.\nfour five.\nsix.\nseven") is None   # 3 / 10 = 0.3
    assert reason(step, "one two.\nfour five.\nsix.\nseven") == "list_like"  # 3 / 9
