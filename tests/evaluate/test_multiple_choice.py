import json

import pytest
import torch
import yaml

from lmforge.errors import LmforgeError
from lmforge.evaluate import choice_metrics, encode_pair, load_task, multiple_choice
from lmforge.evaluate.multiple_choice import TaskSpec


def test_acc_norm_divides_by_choice_length_in_characters():
    # log-likelihoods -4 and -6; per character: -4/2 = -2.0 and -6/6 = -1.0
    metrics = choice_metrics([-4.0, -6.0], ["ab", "abcdef"], answer=1)
    assert metrics == {"acc": 0.0, "acc_norm": 1.0}
    # ties go to the first choice, as numpy's argmax does in lm-eval
    assert choice_metrics([-3.0, -3.0], ["abc", "abc"], answer=0) == {"acc": 1.0, "acc_norm": 1.0}


def test_encode_pair_moves_trailing_context_spaces_into_the_continuation(tiny):
    _, tokenizer = tiny
    request = encode_pair(tokenizer, "Question: why?\nAnswer: ", "light")
    whole = tokenizer.encode("Question: why?\nAnswer: light")
    context = tokenizer.encode("Question: why?\nAnswer:")
    assert request.context == tuple(context)
    assert request.continuation == tuple(whole[len(context):])


def brute_force_loglikelihood(model, tokenizer, context, continuation):
    request = encode_pair(tokenizer, context, continuation)
    ids = list(request.context) + list(request.continuation)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), -1)
    start = len(request.context)
    return sum(logprobs[start - 1 + i, tok].item() for i, tok in enumerate(request.continuation))


@pytest.fixture()
def task_file(tmp_path):
    rows = [
        {"q": "What do plants need to grow?", "options": ["light and water", "rocks", "batteries"], "gold": 0},
        {"q": "What wears rocks down?", "options": ["erosion", "photosynthesis"], "gold": 0},
        {"q": "What stores chemical energy?", "options": ["a battery", "the wind", "sand", "ice"], "gold": 0},
    ]
    data = tmp_path / "toy.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    spec = tmp_path / "toy.yaml"
    spec.write_text(yaml.safe_dump({"name": "toy", "records": str(data), "text": "Question: {{ q }}\nAnswer:",
                                    "choices": "options", "answer": "gold"}))
    return spec, rows


def test_declarative_task_matches_brute_force_scoring(tiny, task_file):
    model, tokenizer = tiny
    spec_path, rows = task_file
    result = multiple_choice(model, tokenizer, spec_path, batch_size=3)
    expected_acc, expected_norm = [], []
    for row, detail in zip(rows, result["details"]):
        lls = [brute_force_loglikelihood(model, tokenizer, f"Question: {row['q']}\nAnswer:", " " + c) for c in row["options"]]
        assert detail["loglikelihoods"] == pytest.approx(lls, rel=1e-5)
        metrics = choice_metrics(lls, row["options"], row["gold"])
        expected_acc.append(metrics["acc"])
        expected_norm.append(metrics["acc_norm"])
    assert result["acc"] == pytest.approx(sum(expected_acc) / 3)
    assert result["acc_norm"] == pytest.approx(sum(expected_norm) / 3)


def test_batch_size_does_not_change_scores(tiny, task_file):
    model, tokenizer = tiny
    one = multiple_choice(model, tokenizer, task_file[0], batch_size=1)
    eight = multiple_choice(model, tokenizer, task_file[0], batch_size=8)
    for a, b in zip(one["details"], eight["details"]):
        assert b["loglikelihoods"] == pytest.approx(a["loglikelihoods"], rel=1e-4)


def test_builtin_arc_easy_renders_like_lm_eval(data_root):
    spec = load_task("arc_easy")
    document = next(spec.documents())
    text, choices, answer = spec.render(document)
    assert text.startswith("Question: Which statement best explains") and text.endswith("\nAnswer:")
    assert len(choices) == 4 and answer == 0
    assert sum(1 for _ in spec.documents()) == 2376
    assert sum(1 for _ in load_task("piqa").documents()) == 1838


def test_unknown_task_and_bad_spec(tmp_path):
    with pytest.raises(LmforgeError, match="unknown task"):
        load_task("hellaswag-not-here")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrecords: arc_easy\ntext: hi\nchoices: c\nanswer: a\nshots: 5\n")
    with pytest.raises(LmforgeError, match="unknown task field"):
        TaskSpec.from_yaml(bad)


def test_empty_context_uses_the_prefix_token_like_lm_eval(tiny):
    _, tokenizer = tiny
    bos = tokenizer.bos_token_id
    plain = encode_pair(tokenizer, "", "Rocks are worn down.")
    assert plain.context == (bos,)
    assert plain.continuation == tuple(tokenizer.encode("Rocks are worn down.", add_special_tokens=False))
    # text that already starts with the prefix token uses it as the context instead of adding another
    prefixed = encode_pair(tokenizer, "", tokenizer.bos_token + "Rocks")
    assert prefixed.context == (bos,) and bos not in prefixed.continuation
