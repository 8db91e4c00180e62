"""lm-eval task files on a tiny random model: prompts, few-shot draws and every metric against independent computations."""

import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.errors import LmforgeError
from lmforge.models.scoring import encode_pair
from lmforge.evaluate.tasks import EvalSettings, RequestCache, aggregate_group, evaluate_task, expand, resolve

DOCS = [
    {"q": "Rocks are worn down by", "choices": ["wind and water", "sugar"], "label": 0},
    {"q": "A battery stores", "choices": ["chemical energy", "rocks", "oxygen"], "label": 2},
    {"q": "Photosynthesis turns sunlight into", "choices": ["sugar", "erosion"], "label": 0},
    {"q": "Erosion is caused by", "choices": ["ice", "a circuit"], "label": 1},
    {"q": "A circuit is closed when", "choices": ["electricity flows", "sugar burns"], "label": 0},
]


def write_task(folder: Path, name: str, docs=DOCS, **keys) -> Path:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "Question: {{q}}\nAnswer:",
            "doc_to_choice": "choices", "doc_to_target": "label", **keys}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def brute_loglikelihood(model, tokenizer, context, continuation):
    """One full forward pass, float64 log-softmax: independent of lmforge's batching and KV sharing."""
    request = encode_pair(tokenizer, context, continuation)
    ids = list(request.context) + list(request.continuation)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    start = len(request.context)
    picks = [logprobs[start - 1 + i] for i in range(len(request.continuation))]
    ll = sum(p[t].item() for p, t in zip(picks, request.continuation))
    return ll, all(int(p.argmax()) == t for p, t in zip(picks, request.continuation))


def test_multiple_choice_metrics_match_a_brute_force_computation(tiny, tmp_path):
    model, tokenizer = tiny
    config = resolve(write_task(tmp_path, "mc", metric_list=[{"metric": "acc"}, {"metric": "acc_norm"},
                                                             {"metric": "acc_bytes"}]))
    result = evaluate_task(model, tokenizer, config, EvalSettings(batch_size=3))
    acc, acc_norm = [], []
    for doc in DOCS:
        lls = [brute_loglikelihood(model, tokenizer, f"Question: {doc['q']}\nAnswer:", " " + c)[0] for c in doc["choices"]]
        acc.append(float(max(range(len(lls)), key=lambda i: lls[i]) == doc["label"]))
        norm = [ll / len(c) for ll, c in zip(lls, doc["choices"])]
        acc_norm.append(float(max(range(len(norm)), key=lambda i: norm[i]) == doc["label"]))
    assert result.documents == 5
    assert result.metrics["acc,none"] == pytest.approx(sum(acc) / 5)
    assert result.metrics["acc_norm,none"] == pytest.approx(sum(acc_norm) / 5)
    assert result.metrics["acc_bytes,none"] == pytest.approx(sum(acc_norm) / 5)  # ASCII: bytes == characters
    mean = sum(acc) / 5
    assert result.stderr["acc,none"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in acc) / 4 / 5))


def test_first_n_fewshot_prompt_has_lm_evals_layout(tiny, tmp_path):
    model, tokenizer = tiny
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(d) + "\n" for d in DOCS[3:]), encoding="utf-8")
    path = write_task(tmp_path, "mc_shots", DOCS[:3], fewshot_split="dev", fewshot_config={"sampler": "first_n"},
                      num_fewshot=2, description="Science questions.\n\n")
    spec = yaml.safe_load(path.read_text())
    spec["dataset_kwargs"]["data_files"]["dev"] = str(dev)
    path.write_text(yaml.safe_dump(spec))
    result = evaluate_task(model, tokenizer, resolve(path), EvalSettings(limit=1))
    context, continuation = result.samples[0]["pairs"][0]
    assert context == ("Science questions.\n\nQuestion: Erosion is caused by\nAnswer: a circuit\n\n"
                       "Question: A circuit is closed when\nAnswer: electricity flows\n\n"
                       "Question: Rocks are worn down by\nAnswer:")
    assert continuation == " wind and water"


def test_default_sampler_draws_like_random_1234_without_the_evaluated_document(tiny, tmp_path):
    model, tokenizer = tiny
    path = write_task(tmp_path, "mc_random", fewshot_split="test", num_fewshot=2)
    result = evaluate_task(model, tokenizer, resolve(path))
    rnd = random.Random(1234)  # lm-eval: one generator, drawn n+1 at a time in document order, the document removed
    for doc, sample in zip(DOCS, result.samples):
        shots = [d for d in rnd.sample(DOCS, 3) if d != doc][:2]
        expected = "".join(f"Question: {d['q']}\nAnswer: {d['choices'][d['label']]}\n\n" for d in shots)
        assert sample["pairs"][0][0] == expected + f"Question: {doc['q']}\nAnswer:"


def test_multiple_input_partial_scoring_scores_the_shared_continuation(tiny, tmp_path):
    model, tokenizer = tiny
    docs = [{"options": ["The rock was worn by wind", "The rock was worn by sugar"], "rest": "and water.", "gold": 0},
            {"options": ["A battery stores energy", "A battery stores rocks"], "rest": "as electricity.", "gold": 1}]
    path = write_task(tmp_path, "partial", docs, doc_to_text="gold", doc_to_choice="options", doc_to_target="rest",
                      metric_list=[{"metric": "acc"}])
    result = evaluate_task(model, tokenizer, resolve(path))
    expected = []
    for doc in docs:
        lls = [brute_loglikelihood(model, tokenizer, o, " " + doc["rest"])[0] for o in doc["options"]]
        expected.append(float(max(range(2), key=lambda i: lls[i]) == doc["gold"]))
    assert result.samples[0]["pairs"] == [(o, " and water.") for o in docs[0]["options"]]
    assert result.metrics["acc,none"] == pytest.approx(sum(expected) / 2)


def test_loglikelihood_perplexity_and_greedy_acc(tiny, tmp_path):
    model, tokenizer = tiny
    docs = [{"text": "Rocks are worn down by wind"}, {"text": "A battery stores chemical energy"}]
    path = write_task(tmp_path, "lastword", docs, output_type="loglikelihood", doc_to_choice=None,
                      doc_to_text="{{text.split(' ')[:-1]|join(' ')}}", doc_to_target="{{' '+text.split(' ')[-1]}}",
                      metric_list=[{"metric": "perplexity"}, {"metric": "acc"}])
    result = evaluate_task(model, tokenizer, resolve(path))
    pairs = [brute_loglikelihood(model, tokenizer, d["text"].rsplit(" ", 1)[0], " " + d["text"].rsplit(" ", 1)[1])
             for d in docs]
    assert result.metrics["perplexity,none"] == pytest.approx(math.exp(-sum(ll for ll, _ in pairs) / 2), rel=1e-5)
    assert result.metrics["acc,none"] == pytest.approx(sum(g for _, g in pairs) / 2)


def test_rolling_word_perplexity_and_bits_per_byte(tiny, tmp_path):
    model, tokenizer = tiny
    docs = [{"page": "Rocks are worn down by wind, water and ice."}, {"page": "A battery stores chemical energy."}]
    path = write_task(tmp_path, "rolling", docs, output_type="loglikelihood_rolling", doc_to_choice=None,
                      doc_to_text="", doc_to_target="page",
                      metric_list=[{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}])
    result = evaluate_task(model, tokenizer, resolve(path))
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    lls = []
    for doc in docs:  # shorter than the context: one window, the prefix token then the text
        ids = [prefix, *tokenizer.encode(doc["page"])]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        lls.append(sum(logprobs[i, ids[i + 1]].item() for i in range(len(ids) - 1)))
    words = sum(len(d["page"].split()) for d in docs)
    n_bytes = sum(len(d["page"].encode()) for d in docs)
    assert result.metrics["word_perplexity,none"] == pytest.approx(math.exp(-sum(lls) / words), rel=1e-5)
    assert result.metrics["bits_per_byte,none"] == pytest.approx(-sum(lls) / n_bytes / math.log(2), rel=1e-5)


def test_generate_until_equals_hf_greedy_generate_and_is_batch_size_independent(tiny, tmp_path):
    model, tokenizer = tiny
    docs = [{"question": d["q"], "answer": "#### 7"} for d in DOCS]
    path = write_task(tmp_path, "gen", docs, output_type="generate_until", doc_to_choice=None,
                      doc_to_text="Q: {{question}}\nA:", doc_to_target="answer",
                      generation_kwargs={"until": ["\n\n", "rocks"], "max_gen_toks": 12, "do_sample": False},
                      filter_list=[{"name": "last-word", "filter": [{"function": "regex", "regex_pattern": r"(\w+)",
                                                                      "group_select": -1}, {"function": "take_first"}]}],
                      metric_list=[{"metric": "exact_match", "ignore_case": True}])
    config = resolve(path)
    one = evaluate_task(model, tokenizer, config, EvalSettings(batch_size=1))
    four = evaluate_task(model, tokenizer, config, EvalSettings(batch_size=4))
    assert [s["response"] for s in one.samples] == [s["response"] for s in four.samples]
    for doc, sample in zip(docs, one.samples):
        ids = tokenizer(f"Q: {doc['question']}\nA:", return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        for stop in ("\n\n", "rocks", tokenizer.eos_token or ""):
            text = text.split(stop)[0] if stop else text
        assert sample["response"] == text
        words = re.findall(r"(\w+)", text)
        assert sample["filtered"]["last-word"] == (words[-1] if words else "[invalid]")
    assert set(one.metrics) == {"exact_match,last-word"}


def test_group_aggregates_by_size(tiny, tmp_path):
    model, tokenizer = tiny
    write_task(tmp_path, "part_a", DOCS[:2], metric_list=[{"metric": "acc"}])
    write_task(tmp_path, "part_b", DOCS[2:], metric_list=[{"metric": "acc"}])
    (tmp_path / "both.yaml").write_text(yaml.safe_dump({"group": "both", "task": ["part_a", "part_b"],
                                                        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]}))
    group = resolve("both", include_paths=[tmp_path])
    results = [evaluate_task(model, tokenizer, t) for t in expand(group, [tmp_path])]
    a, b = (r.metrics["acc,none"] for r in results)
    assert aggregate_group(group, results)["acc,none"] == pytest.approx((2 * a + 3 * b) / 5)


def test_include_merges_the_included_file_first(tmp_path):
    write_task(tmp_path, "base", description="base text")
    (tmp_path / "child.yaml").write_text("include: base.yaml\ntask: child\ndescription: child text\n")
    config = resolve(tmp_path / "child.yaml")
    assert (config.task, config.description, config.output_type) == ("child", "child text", "multiple_choice")


def test_cache_reuses_answers_for_the_same_model_only(tiny, tmp_path):
    model, tokenizer = tiny
    config = resolve(write_task(tmp_path, "cached"))
    cache = RequestCache(tmp_path / "cache")
    first = evaluate_task(model, tokenizer, config, cache=cache)
    again = evaluate_task(model, tokenizer, config, cache=cache)
    assert (first.cached, again.cached) == (False, True) and again.metrics == first.metrics
    with torch.no_grad():  # the same architecture and config, different weights: must not hit the cache
        twin = type(model)(model.config)
        twin.load_state_dict(model.state_dict())
        twin.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    assert evaluate_task(twin, tokenizer, config, cache=cache).cached is False
    assert evaluate_task(model, tokenizer, config, EvalSettings(num_fewshot=1), cache=cache).cached is False


def test_chat_template_single_turn_and_multiturn(tiny, tmp_path):
    model, tokenizer = tiny
    import copy

    tokenizer = copy.deepcopy(tokenizer)  # the session fixture stays without a chat template
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps(DOCS[3]) + "\n")
    path = write_task(tmp_path, "chat", DOCS[:1], fewshot_split="dev", num_fewshot=1)
    spec = yaml.safe_load(path.read_text())
    spec["dataset_kwargs"]["data_files"]["dev"] = str(dev)
    path.write_text(yaml.safe_dump(spec))
    single = evaluate_task(model, tokenizer, resolve(path), EvalSettings(apply_chat_template=True, system_prompt="Be brief."))
    assert single.samples[0]["pairs"][0] == (
        "<system>Be brief.</system><user>Question: Erosion is caused by\nAnswer: a circuit\n\n"
        "Question: Rocks are worn down by\nAnswer:</user><assistant>", "wind and water")
    multi = evaluate_task(model, tokenizer, resolve(path), EvalSettings(apply_chat_template=True, fewshot_as_multiturn=True))
    assert multi.samples[0]["pairs"][0][0] == ("<user>Question: Erosion is caused by\nAnswer:</user><assistant>a circuit"
                                               "</assistant><user>Question: Rocks are worn down by\nAnswer:</user><assistant>")


# -- bad input: one-line errors naming the problem -------------------------------------------------------------------
def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_unsupported_key_is_refused_by_name(tmp_path):
    path = write_task(tmp_path, "bad", use_prompt="promptsource:GPT-3 Style")
    with pytest.raises(LmforgeError) as excinfo:
        resolve(path)
    assert "'use_prompt'" in _one_line(excinfo)


def test_function_needs_trust_task_code(tiny, tmp_path):
    model, tokenizer = tiny
    path = write_task(tmp_path, "code")
    path.write_text(path.read_text() + "process_docs: !function helpers.process_docs\n")
    (tmp_path / "helpers.py").write_text("def process_docs(ds):\n    return ds\n")
    with pytest.raises(LmforgeError) as excinfo:
        evaluate_task(model, tokenizer, resolve(path))
    assert "--trust-task-code" in _one_line(excinfo)
    assert evaluate_task(model, tokenizer, resolve(path), EvalSettings(trust_task_code=True)).documents == 5


def test_missing_data_file(tiny, tmp_path):
    model, tokenizer = tiny
    path = write_task(tmp_path, "nodata")
    path.write_text(path.read_text().replace("nodata.jsonl", "absent.jsonl"))
    with pytest.raises(LmforgeError) as excinfo:
        evaluate_task(model, tokenizer, resolve(path))
    assert "absent.jsonl does not exist" in _one_line(excinfo)


def test_num_fewshot_larger_than_the_split(tiny, tmp_path):
    model, tokenizer = tiny
    path = write_task(tmp_path, "shots", fewshot_split="test")
    with pytest.raises(LmforgeError) as excinfo:
        evaluate_task(model, tokenizer, resolve(path), EvalSettings(num_fewshot=5))
    assert "num_fewshot 5 is larger than the 4" in _one_line(excinfo)


def test_filters_and_exact_match_options_by_hand():
    from lmforge.evaluate.tasks.filters import pipelines
    from lmforge.evaluate.tasks.metrics import exact_match

    gsm8k = pipelines([
        {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": r"#### (\-?[0-9\.\,]+)"},
                                            {"function": "take_first"}]},
        {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                 "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                {"function": "take_first"}]}], "gsm8k")
    assert gsm8k["strict-match"]("so 5+3=8.\n#### 8") == "8"
    assert gsm8k["strict-match"]("the answer is 8") == "[invalid]"
    # findall gives (group1, group2) tuples; the last one is ('', '7'): its first non-empty group
    assert gsm8k["flexible-extract"]("The cost is $1,200 and 7") == "7"
    assert gsm8k["flexible-extract"]("The cost is $1,200.") == "$1,200."
    ignore = [",", "\\$", "(?s).*#### ", "\\.$"]
    assert exact_match("$1,200.", "Adds up.\n#### 1200", regexes_to_ignore=ignore) == 1.0
    assert exact_match("1200", "1201", regexes_to_ignore=ignore) == 0.0
    assert exact_match("Paris!", "paris", ignore_case=True, ignore_punctuation=True) == 1.0
    assert exact_match("Paris!", "paris", ignore_case=True) == 0.0
    assert exact_match("room 12", "room 7", ignore_numbers=True) == 1.0
    lower = pipelines([{"name": "low", "filter": [{"function": "remove_whitespace"}, {"function": "lowercase"}]}], "t")
    assert lower["low"]("  YES ") == "yes"


def test_choice_scores_by_hand():
    from lmforge.evaluate.tasks.metrics import choice_scores

    # -4/2 = -2 vs -6/6 = -1 per character: acc picks 0, acc_norm picks 1; exact_match is the gold's greedy flag
    assert choice_scores([-4.0, -6.0], [False, True], ["ab", "abcdef"], 1) == {
        "acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0, "exact_match": 1.0}
    # 'é' is one character but two UTF-8 bytes: per character -2 vs -1.5 (pick 1), per byte -1 vs -1.5 (pick 0)
    assert choice_scores([-2.0, -3.0], [False, False], ["é", "ab"], 0) == {
        "acc": 1.0, "acc_norm": 0.0, "acc_bytes": 1.0, "exact_match": 0.0}
    # ties go to the first choice (numpy argmax); a list of golds counts any of them
    assert choice_scores([-1.0, -1.0], [True, True], ["a", "b"], [1])["acc"] == 0.0


def test_fewshot_prefix_kv_sharing_gives_the_full_context_scores(tiny, tmp_path):
    from lmforge.models.scoring import _PrefixCache

    model, tokenizer = tiny
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(d) + "\n" for d in DOCS[3:]), encoding="utf-8")
    description = "The following are questions about rocks, batteries and sunlight, with answers.\n\n"
    path = write_task(tmp_path, "prefix", DOCS[:3], fewshot_split="dev", fewshot_config={"sampler": "first_n"},
                      num_fewshot=2, description=description)
    spec = yaml.safe_load(path.read_text())
    spec["dataset_kwargs"]["data_files"]["dev"] = str(dev)
    path.write_text(yaml.safe_dump(spec))
    result = evaluate_task(model, tokenizer, resolve(path), EvalSettings(batch_size=2))
    contexts = sorted({tuple(encode_pair(tokenizer, c, x).context) for s in result.samples for c, x in s["pairs"]})
    assert len(_PrefixCache(model, contexts).tokens) >= _PrefixCache.MIN_TOKENS  # the shared path is taken
    for sample in result.samples:
        for (context, continuation), (ll, greedy) in zip(sample["pairs"], sample["response"]):
            assert (ll, greedy) == pytest.approx(brute_loglikelihood(model, tokenizer, context, continuation), abs=1e-4)
