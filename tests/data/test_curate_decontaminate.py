
from lmforge.data import load_records
from lmforge.data.curate import Decontaminate, Document, NgramIndex
from lmforge.paths import data_dir


def test_index_matches_13grams_and_short_items():
    index = NgramIndex.build({"task": ["one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
                                       "a short question of exactly nine words right here",
                                       "too short to count"]})
    assert index.matches("prefix One two three, four five six seven eight nine ten eleven twelve thirteen!") == {"task": 1}
    assert index.matches("two three four five six seven eight nine ten eleven twelve thirteen") == {}  # 12 words only
    assert index.matches("Is this A short question of exactly nine words right here? yes") == {"task": 1}
    assert index.matches("too short to count") == {}


def test_planted_arc_question_is_caught(require):
    require((data_dir() / "arc_easy" / "test.jsonl").exists(), "shared ARC data not present")
    question = next(r["question"] for r in load_records("arc_easy") if len(r["question"].split()) >= 15)
    step = Decontaminate(tasks=["arc_easy"])
    step.setup()
    planted = Document("p", "Our science newsletter this week. " + question.upper() + " Answers next week.")
    clean = Document("c", "A completely ordinary paragraph about gardening, tomatoes and the weather in spring.")
    drops = []
    kept = list(step.run([planted, clean], drops))
    assert [d.id for d in kept] == ["c"]
    assert drops[0].reason == "contaminated" and "arc_easy" in drops[0].detail
    assert step.stats.counters["contamination_documents"]["arc_easy"] == 1
