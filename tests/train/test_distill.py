"""Distillation: the loss is the tempered KL, training moves the student to the teacher, zeros stay zero."""

import copy
import math

import pytest
import torch

from lmforge.compress.pruning import Magnitude, prune
from lmforge.data import corpus_from_texts
from lmforge.errors import LmforgeError
from lmforge.models import tiny_llama, tiny_model_and_tokenizer
from lmforge.train.distill import DistillConfig, distill, kd_loss, token_windows

TEXT = ["The quick brown fox jumps over the lazy dog. Models predict the next token of a text. " * 40]


def test_kd_loss_is_t_squared_kl_of_teacher_to_student():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 11, generator=g), torch.randn(3, 5, 11, generator=g)
    T = 2.5
    expected = 0.0
    for s_row, t_row in zip(student.reshape(-1, 11), teacher.reshape(-1, 11)):
        p = torch.softmax(t_row / T, -1)
        q = torch.softmax(s_row / T, -1)
        expected += float((p * (p.log() - q.log())).sum())
    expected = expected / 15 * T**2
    assert math.isclose(float(kd_loss(student, teacher, T)), expected, rel_tol=1e-5)
    assert float(kd_loss(teacher, teacher, T)) == pytest.approx(0.0, abs=1e-6)


def test_distilling_a_pruned_student_moves_it_to_the_teacher_and_keeps_its_zeros():
    teacher, tokenizer = tiny_model_and_tokenizer(TEXT, hidden_size=32, layers=2, heads=2, kv_heads=1, intermediate_size=64)
    with torch.no_grad():  # a random init predicts nearly uniform tokens; sharpen it so pruning matters
        for param in teacher.parameters():
            if param.dim() == 2:
                param.mul_(20)
    student = copy.deepcopy(teacher)
    prune(student, Magnitude(0.5))
    zeros = student.model.layers[0].mlp.up_proj.weight == 0
    corpus = corpus_from_texts(TEXT)
    probe = token_windows(tokenizer, corpus, 32)[:4]

    def gap(model):
        with torch.no_grad():
            return float(kd_loss(model(probe).logits, teacher(probe).logits, 1.0))

    result = distill(student, teacher, corpus, DistillConfig(steps=25, batch_size=2, seq_len=32, lr=3e-3, warmup_steps=2,
                                                             hidden_weight=0.01, eval_every=5),
                     tokenizer=tokenizer, evaluate=gap)
    assert result.steps == 25 and [p["step"] for p in result.curve] == [0, 5, 10, 15, 20, 25]
    assert result.curve[-1]["eval"] < 0.5 * result.curve[0]["eval"]
    assert torch.equal(student.model.layers[0].mlp.up_proj.weight == 0, zeros)


def test_mismatched_pairs_and_settings_are_user_errors():
    teacher, tokenizer = tiny_model_and_tokenizer(TEXT, hidden_size=32, layers=1, heads=2, kv_heads=1)
    narrow = tiny_llama(vocab_size=len(tokenizer), hidden_size=16, layers=1, heads=2, kv_heads=1)
    with pytest.raises(LmforgeError, match="equal hidden sizes"):
        distill(narrow, teacher, corpus_from_texts(TEXT), DistillConfig(hidden_weight=1.0), tokenizer=tokenizer)
    with pytest.raises(LmforgeError, match="temperature"):
        DistillConfig(temperature=0)
