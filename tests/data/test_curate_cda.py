"""Counterfactual data augmentation: whole-word, case-keeping two-sided swaps, names, the data card's counts and
version, one-sided pair files named, and finetune --cda training on the augmented corpus."""

import json

import pytest

from lmforge.data.curate import Document, Pipeline
from lmforge.data.curate.card import card_sections
from lmforge.data.curate.cda import CounterfactualAugment, load_word_pairs, swap
from lmforge.errors import LmforgeError


def test_swaps_respect_word_boundaries_and_case():
    text, n = swap("He told his SISTER that the Queen thanked her; theme and heal stay. Mr Smith's son left.")
    assert text == "She told hers BROTHER that the King thanked him; theme and heal stay. Mrs Smith's daughter left."
    assert n == 7


def test_swapping_twice_gives_the_text_back_and_names_swap_only_capitalized():
    original = "John met Mary and her father; mark the date, Mark."
    once, _ = swap(original)
    assert once == "Patricia met James and him mother; mark the date, Sandra."
    assert swap(once)[0] == original  # two-sided: every word and name has exactly one partner


def test_the_step_adds_counterfactual_copies_and_the_card_counts_them():
    step = CounterfactualAugment()
    docs = [Document("a", "She is a doctor."), Document("b", "The river is wide.")]
    out = list(step.run(docs, drops=[]))
    assert [d.id for d in out] == ["a", "a#cda", "b"]
    assert out[1].text == "He is a doctor." and out[1].meta["counterfactual_of"] == "a"
    stats = step.stats.to_dict()
    assert stats["docs_in"] == 2 and stats["docs_out"] == 3
    card = {title: rows for title, _, rows, _ in card_sections({"steps": {"counterfactual_augment": stats}})}
    assert card["Counterfactual augmentation"] == [["gender v1", 2, 1, 1]]


def test_a_pipeline_yaml_runs_the_step(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["His aunt sings.", "Rain falls."]))
    spec = tmp_path / "p.yaml"
    spec.write_text(f"input: {{paths: [{source}]}}\nsteps:\n  - counterfactual_augment\n"
                    f"output: {{dir: {tmp_path / 'out'}, format: jsonl}}\n")
    stats = Pipeline.from_yaml(spec).run(workers=1)
    texts = [json.loads(line)["text"] for f in sorted((tmp_path / "out" / "data").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(texts) == sorted(["His aunt sings.", "Hers uncle sings.", "Rain falls."])
    assert stats["steps"]["01-counterfactual_augment"]["counters"]["augmented"]["documents"] == 1


@pytest.mark.parametrize("pairs, message", [
    ([["he", "she"], ["actor"]], "pair 1 \\['actor'\\] is one-sided"),
    ([["he", "she"], ["king", ""]], "pair 1 \\['king', ''\\] is one-sided"),
    ([["him", "her"], ["his", "her"]], "pair 1 \\['his', 'her'\\] reuses 'her'"),
])
def test_a_bad_word_pair_file_is_named_in_one_line(tmp_path, pairs, message):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"name": "test", "version": "0", "pairs": pairs}))
    with pytest.raises(LmforgeError, match=message) as error:
        load_word_pairs(str(path))
    assert "pairs.json" in str(error.value) and "\n" not in str(error.value)


def test_finetune_cda_trains_on_the_augmented_corpus(tmp_path):
    from lmforge.models import tiny_model_and_tokenizer
    from lmforge.train.finetune import FinetuneConfig, finetune

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(["She fixed the engine and he cooked dinner." * 4, "The river ran past the mill." * 4] * 6))
    model, tokenizer = tiny_model_and_tokenizer(seed=0, hidden_size=32, intermediate_size=64)
    plain = finetune(model, tokenizer, FinetuneConfig(data=str(corpus), format="text", max_steps=1, batch_size=2,
                                                      micro_batch_size=2, max_length=32), None, log=None)
    model, tokenizer = tiny_model_and_tokenizer(seed=0, hidden_size=32, intermediate_size=64)
    augmented = finetune(model, tokenizer, FinetuneConfig(data=str(corpus), format="text", cda=True, max_steps=1,
                                                          batch_size=2, micro_batch_size=2, max_length=32), None, log=None)
    assert plain.counterfactual_examples == 0 and augmented.counterfactual_examples > 0
    assert augmented.train_examples + augmented.eval_examples > plain.train_examples + plain.eval_examples
