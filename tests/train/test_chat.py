"""Multi-turn SFT: labels on assistant turns only, against a hand-built mask; packing without attention or loss
across examples; conversations without an assistant turn are named."""

import copy
import json

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.models import tiny_model_and_tokenizer
from lmforge.train.chat import IGNORE, collate_packed, encode_conversation, pack, read_conversations
from lmforge.train.finetune import FinetuneConfig, collate, finetune, token_loss_sum

CHAT = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is erosion?"},
                {"role": "assistant", "content": "Rock worn by water."}, {"role": "user", "content": "And wind?"},
                {"role": "assistant", "content": "Wind wears rock too."}]


@pytest.fixture(scope="module")
def small():
    model, tokenizer = tiny_model_and_tokenizer(seed=2, hidden_size=32, intermediate_size=64)
    tokenizer.chat_template = CHAT
    return model, tokenizer


def test_labels_are_the_assistant_turns_exactly(small):
    _, tokenizer = small
    ids, labels = encode_conversation(tokenizer, CONVERSATION, 512)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    # the mask by hand: context pieces are ignored, each assistant turn's content and end marker are learned
    pieces = [("<|system|>Be brief.<|end|>\n<|user|>What is erosion?<|end|>\n<|assistant|>", False),
              ("Rock worn by water.<|end|>\n", True), ("<|user|>And wind?<|end|>\n<|assistant|>", False),
              ("Wind wears rock too.<|end|>\n", True)]
    expected_ids = [t for text, _ in pieces for t in encode(text)]
    expected_labels = [t if learned else IGNORE for text, learned in pieces for t in encode(text)]
    assert ids == expected_ids and labels == expected_labels
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_packed_rows_see_and_learn_only_their_own_example(small):
    model, tokenizer = small
    examples = [encode_conversation(tokenizer, CONVERSATION[:3], 512), encode_conversation(tokenizer, CONVERSATION, 512),
                encode_conversation(tokenizer, CONVERSATION[1:3], 512)]
    lengths = [len(ids) for ids, _ in examples]
    rows = pack(examples, max_length=lengths[0] + lengths[1])
    assert [len(r) for r in rows] == [2, 1]
    batch = collate_packed(rows, tokenizer.pad_token_id)

    # the mask by hand: row 0 holds examples of lengths a and b, row 1 one example of length c plus padding
    a, b, c = lengths
    width = a + b
    expected = torch.zeros(2, width, width, dtype=torch.bool)
    for i in range(width):
        for j in range(i + 1):
            expected[0, i, j] = (i < a and j < a) or (i >= a and j >= a)
            expected[1, i, j] = (i < c and j < c) or i == j
    assert torch.equal(batch["attention_mask"][:, 0], expected)
    assert batch["position_ids"][0].tolist() == list(range(a)) + list(range(b))
    assert batch["labels"][0, a].item() == IGNORE  # the second example's first token is nobody's target

    with torch.no_grad():
        packed_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              position_ids=batch["position_ids"]).logits
        for (ids, _), (row, start) in zip(examples, [(0, 0), (0, a), (1, 0)]):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            torch.testing.assert_close(packed_logits[row, start:start + len(ids)], alone, atol=1e-5, rtol=1e-5)
        packed_loss, packed_count = token_loss_sum(model, batch)
        separate = [token_loss_sum(model, collate([e], tokenizer.pad_token_id)) for e in examples]
    assert packed_count == sum(n for _, n in separate)
    assert packed_loss.item() == pytest.approx(sum(loss.item() for loss, _ in separate), rel=1e-5)


def test_a_conversation_without_an_assistant_turn_is_named(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATION}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "hello?"}]}) + "\n")
    with pytest.raises(LmforgeError, match="chats.jsonl:2: the conversation has no assistant turn") as error:
        read_conversations(path, "messages", None)
    assert "\n" not in str(error.value)


def test_finetune_learns_multi_turn_data_packed(small, tmp_path):
    model, tokenizer = copy.deepcopy(small[0]), small[1]
    model.lm_head.weight.data *= 25  # a random model's logits are tiny; widen the frozen head (as test_finetune does)
    path = tmp_path / "chats.jsonl"
    rows = [[{"role": "user", "content": f"What is {a} plus {b}?"}, {"role": "assistant", "content": f"{a + b}."},
             {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": f"Yes, {a + b}."}]
            for a in range(6) for b in range(5)]
    path.write_text("".join(json.dumps({"chat": r}) + "\n" for r in rows))
    config = FinetuneConfig(data=str(path), messages_field="chat", pack=True, max_length=128, epochs=8, batch_size=2,
                            micro_batch_size=1, lr=2e-2, rank=4, dropout=0.0, eval_fraction=0.2)
    result = finetune(model, tokenizer, config, None, log=None)
    assert sum(result.losses[-5:]) < 0.5 * sum(result.losses[:5])
    assert result.train_examples == 24
