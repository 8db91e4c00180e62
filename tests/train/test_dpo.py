"""DPO: the loss against its formula and against TRL's DPOTrainer on one batch, HH-RLHF parsing, bad records,
the before/after report, the reference cache and resuming onto the same curve."""

import copy
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.models import save_model, tiny_model_and_tokenizer
from lmforge.train.dpo import (DpoConfig, collate_pairs, dpo, dpo_loss, encode_pair, parse_dialogue, preference_pair,
                               read_preferences, sequence_logps)

TRL_PYTHON = Path(os.environ.get("LMFORGE_TRL_PYTHON", Path(__file__).resolve().parents[2] / ".venv-trl/bin/python"))
if not TRL_PYTHON.exists():
    TRL_PYTHON = Path("/work/main/.venv-trl/bin/python")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ["river", "stone", "water", "wind", "ice", "sugar", "light", "battery", "circuit", "energy"]


def pairs(n: int) -> list[dict]:
    """Preference pairs where the chosen answer always names the first word of the question: learnable."""
    out = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(3 * i + 1) % len(WORDS)]
        out.append({"prompt": [{"role": "user", "content": f"Which is it, {a} or {b}?"}], "chosen": f"It is {a}.",
                    "rejected": f"It is {b} and {b}."})
    return out


@pytest.fixture(scope="module")
def small():
    model, tokenizer = tiny_model_and_tokenizer([" ".join(WORDS) + " Which is it, or ? It and ."] * 3, seed=1,
                                                hidden_size=32, intermediate_size=64)
    tokenizer.chat_template = CHATML
    return model, tokenizer


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_loss_and_rewards_equal_the_formula():
    policy = torch.tensor([[-3.0, -5.5], [-8.0, -2.0], [-1.25, -1.5]])
    reference = torch.tensor([[-4.0, -5.0], [-7.5, -2.5], [-1.0, -1.0]])
    for loss_type in ("sigmoid", "robust"):
        for beta in (0.1, 0.5):
            for eps in (0.0, 0.1, 0.3):
                losses, chosen, rejected = dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
                                                    beta, eps, loss_type)
                for k in range(3):
                    rc = beta * (policy[k, 0].item() - reference[k, 0].item())
                    rr = beta * (policy[k, 1].item() - reference[k, 1].item())
                    if loss_type == "sigmoid":
                        expected = -(1 - eps) * logsigmoid(rc - rr) - eps * logsigmoid(rr - rc)
                    else:
                        expected = (-(1 - eps) * logsigmoid(rc - rr) + eps * logsigmoid(rr - rc)) / (1 - 2 * eps)
                    assert losses[k].item() == pytest.approx(expected, abs=1e-6), (loss_type, beta, eps, k)
                    assert chosen[k].item() == pytest.approx(rc, abs=1e-6) and rejected[k].item() == pytest.approx(rr, abs=1e-6)


def test_sequence_logps_sum_the_answer_tokens_only(small):
    model, tokenizer = small
    encoded = [encode_pair(tokenizer, p, 64, 32) for p in pairs(3)]
    batch = collate_pairs(encoded, tokenizer.pad_token_id)
    got = sequence_logps(model, batch)
    for row, (p, side) in enumerate([(p, s) for s in ("chosen_ids", "rejected_ids") for p in encoded]):
        ids = torch.tensor([p["prompt_ids"] + p[side]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        answer = range(len(p["prompt_ids"]) - 1, ids.shape[1] - 1)
        expected = sum(logprobs[t, ids[0, t + 1]].item() for t in answer)
        assert got[row].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type, beta, eps", [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("robust", 0.2, 0.1)])
def test_equals_trl_dpo_trainer_on_a_fixed_batch(small, tmp_path, require, loss_type, beta, eps):
    """TRL 1.16 (its own venv) computes the loss and rewards of the same batch with its DPOTrainer."""
    require(TRL_PYTHON.exists(), "TRL's venv (/work/main/.venv-trl) is not installed")
    model, tokenizer = small
    reference = copy.deepcopy(model)
    policy = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))  # a policy that has moved away from the reference
    save_model(policy, tokenizer, tmp_path / "policy")
    save_model(reference, tokenizer, tmp_path / "reference")
    encoded = [encode_pair(tokenizer, p, 64, 32) for p in pairs(3)]
    batch = collate_pairs(encoded, tokenizer.pad_token_id)
    torch.save(batch, tmp_path / "batch.pt")
    subprocess.run([str(TRL_PYTHON), str(Path(__file__).with_name("trl_dpo_reference.py")), str(tmp_path / "policy"),
                    str(tmp_path / "reference"), str(tmp_path / "batch.pt"), str(beta), str(eps), loss_type,
                    str(tmp_path / "trl.json")], check=True, capture_output=True)
    theirs = json.loads((tmp_path / "trl.json").read_text())
    policy.train()
    chosen, rejected = sequence_logps(policy, batch).chunk(2)
    with torch.no_grad():
        ref_chosen, ref_rejected = sequence_logps(reference, batch).chunk(2)
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, eps, loss_type)
    assert losses.mean().item() == pytest.approx(theirs["loss"], abs=1e-5)
    assert chosen_rewards.mean().item() == pytest.approx(theirs["rewards/chosen"], abs=1e-5)
    assert rejected_rewards.mean().item() == pytest.approx(theirs["rewards/rejected"], abs=1e-5)
    assert (chosen_rewards - rejected_rewards).mean().item() == pytest.approx(theirs["rewards/margins"], abs=1e-5)
    assert chosen.mean().item() == pytest.approx(theirs["logps/chosen"], abs=1e-4)
    assert abs(theirs["rewards/margins"]) > 1e-3  # the batch says something: policy and reference differ


def test_hh_rlhf_dialogues_become_messages():
    record = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
              "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?\n\nAssistant: Use a pin."}
    pair = preference_pair(record, "r")
    assert pair["prompt"] == [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "How do I pick a lock?"}]
    assert pair["chosen"] == "I can't help with that." and pair["rejected"] == "Use a pin."
    assert parse_dialogue("\n\nHuman: a\n\nAssistant:")[-1] == {"role": "assistant", "content": ""}


def test_the_shipped_hh_rlhf_pairs_read():
    read, skipped = read_preferences("hh_rlhf")
    assert len(read) + skipped == 2312 and skipped < 10
    assert all(p["prompt"][-1]["role"] == "user" for p in read)


@pytest.mark.parametrize("record, message", [
    ({"prompt": "Q", "chosen": "A"}, "data.jsonl:2: a preference record needs 'chosen' and 'rejected' \\(it has: prompt, chosen\\)"),
    ({"chosen": [{"role": "user", "content": "Q"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
     "data.jsonl:2: 'chosen' does not end with an assistant turn"),
])
def test_bad_preference_records_are_named_in_one_line(tmp_path, record, message):
    path = tmp_path / "data.jsonl"
    good = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(LmforgeError, match=message) as error:
        read_preferences(str(path))
    assert "\n" not in str(error.value)


def test_dpo_learns_the_preference_caches_the_reference_and_resumes(small, tmp_path):
    model, tokenizer = small
    config = DpoConfig(eval_pairs=8, beta=0.5, max_steps=6, batch_size=4, micro_batch_size=2, lr=5e-3, rank=4, alpha=8,
                       checkpoint_every=3, max_length=64, max_prompt_length=32, warmup_steps=1)
    straight = dpo(copy.deepcopy(model), tokenizer, config, tmp_path / "a", pairs=pairs(40), log=None)
    assert straight.before["reward_accuracy"] == 0 and straight.before["reward_margin"] == 0
    assert straight.after["reward_margin"] > 0.05 and straight.after["reward_accuracy"] > 0.5
    assert straight.after["logp_margin"] > straight.before["logp_margin"]
    assert list((tmp_path / "a" / "cache").glob("reference-logps-*.pt")) and (tmp_path / "a" / "adapters").is_dir()

    class Interrupt(Exception):
        pass

    def stop_after_three(n=1, seen=[0]):
        seen[0] += n
        if seen[0] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        dpo(copy.deepcopy(model), tokenizer, config, tmp_path / "b", pairs=pairs(40), log=None, progress=stop_after_three)
    resumed = dpo(copy.deepcopy(model), tokenizer, config, tmp_path / "b", pairs=pairs(40), log=None)
    assert resumed.resumed_from == 3
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)
    assert resumed.after["reward_margin"] == pytest.approx(straight.after["reward_margin"], abs=1e-6)
    with pytest.raises(LmforgeError, match="other settings \\(beta\\)"):
        dpo(copy.deepcopy(model), tokenizer, DpoConfig(**{**config.__dict__, "beta": 0.2}), tmp_path / "b",
            pairs=pairs(40), log=None)


def test_align_cli_reports_before_and_after_and_names_a_bad_record(tiny_folder, tmp_path):
    from typer.testing import CliRunner

    from lmforge.cli.main import app

    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p["prompt"][0]["content"], "chosen": p["chosen"], "rejected": p["rejected"]}) + "\n"
                            for p in pairs(12)))
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["align", str(tiny_folder), "--method", "dpo", "--data", str(data), "--eval-pairs", "4",
                                      "--steps", "2", "--batch-size", "4", "--rank", "2", "--max-length", "64",
                                      "--max-prompt-length", "32", "-o", str(tmp_path / "aligned"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "held-out pairs (4)" in result.output and "reward accuracy" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["steps"] == 2 and metrics["before"]["reward_margin"] == 0 and "energy" in metrics
    assert (tmp_path / "aligned" / "adapters" / "adapter_model.safetensors").exists()

    data.write_text(json.dumps({"prompt": "Q", "chosen": "A"}) + "\n")
    result = CliRunner().invoke(app, ["align", str(tiny_folder), "--data", str(data)])
    assert result.exit_code != 0
    assert "prefs.jsonl:1: a preference record needs 'chosen' and 'rejected'" in str(result.exception or result.output)
