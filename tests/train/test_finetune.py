import copy
import json

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.models import tiny_model_and_tokenizer
from lmforge.train.finetune import IGNORE, FinetuneConfig, arc_easy_instructions, encode_instruction, finetune
from lmforge.workflows.finetune import out_of_domain_loss

CHAT = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture
def instruction_file(tmp_path):
    path = tmp_path / "instructions.jsonl"
    rows = [{"prompt": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}."} for a in range(8) for b in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_labels_cover_the_response_only(one_thread):
    _, tokenizer = tiny_model_and_tokenizer()
    tokenizer.chat_template = CHAT
    ids, labels = encode_instruction(tokenizer, "Why is the sky blue?", "Rayleigh scattering.", 256)
    learned = [t for t, label in zip(ids, labels) if label != IGNORE]
    assert tokenizer.decode(learned) == "Rayleigh scattering.\n"
    assert tokenizer.decode(ids).startswith("<|user|>Why is the sky blue?\n<|assistant|>")


def test_lora_learns_and_merged_logits_match_the_adapters(tmp_path, instruction_file, one_thread):
    model, tokenizer = tiny_model_and_tokenizer(hidden_size=32, layers=2, heads=2, kv_heads=1, intermediate_size=64)
    # A random model's logits are tiny and its frozen head bounds what adapters can express; widen it.
    model.lm_head.weight.data *= 25
    tokenizer.chat_template = CHAT
    original = copy.deepcopy(model.state_dict())
    ood = tmp_path / "ood.txt"
    ood.write_text("The quick brown fox jumps over the lazy dog. " * 60)
    config = FinetuneConfig(data=str(instruction_file), epochs=10, batch_size=8, micro_batch_size=4, lr=2e-2,
                            eval_fraction=0.2, ood_corpus=str(ood), ood_windows=2, ood_seqlen=64, rank=4, dropout=0.0)
    result = finetune(model, tokenizer, config, tmp_path / "adapters", log=None,
                      out_of_domain_loss=out_of_domain_loss(tokenizer, config))
    report = result.forgetting
    assert report["after"]["in_domain_loss"] < report["before"]["in_domain_loss"] / 2
    assert set(report["change"]) >= {"in_domain_loss", "out_of_domain_loss"}
    assert result.trainable_params < result.total_params / 5
    assert (tmp_path / "adapters" / "adapter_model.safetensors").is_file()

    adapted = result.model
    ids = torch.randint(0, len(tokenizer), (2, 24))
    with torch.no_grad():
        unmerged = adapted(ids).logits
        merged_model = copy.deepcopy(adapted).merge_and_unload()
        merged = merged_model(ids).logits
    assert not torch.allclose(merged_model.model.layers[0].self_attn.q_proj.weight,
                              original["model.layers.0.self_attn.q_proj.weight"])
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)


def test_arc_easy_instructions_are_real_and_bad_files_are_named(tmp_path):
    examples = arc_easy_instructions(limit=5)
    assert len(examples) == 5 and examples[0]["response"][0] in "ABCD1234"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')
    model, tokenizer = tiny_model_and_tokenizer()
    with pytest.raises(LmforgeError, match="needs fields 'prompt' and 'response'"):
        finetune(model, tokenizer, FinetuneConfig(data=str(bad), format="instruction"), log=None)


def test_merge_saves_a_plain_model_that_loads(tmp_path, instruction_file, one_thread):
    from lmforge.models import load_model

    model, tokenizer = tiny_model_and_tokenizer(hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64)
    config = FinetuneConfig(data=str(instruction_file), max_steps=2, merge=True, dropout=0.0)
    result = finetune(model, tokenizer, config, tmp_path / "merged", log=None)
    loaded, _ = load_model(tmp_path / "merged")
    ids = torch.randint(0, len(tokenizer), (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, result.model(ids).logits, atol=1e-5, rtol=1e-5)
