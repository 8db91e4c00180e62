import math

import pytest
import torch

from lmforge.data import corpus_from_texts
from lmforge.errors import LmforgeError
from lmforge.train import load_config, pretrain


def test_loss_falls_and_model_is_saved(tmp_path, tiny_data, tiny_config):
    tokenizer, data = tiny_data
    result = pretrain(tiny_config(max_steps=30), tmp_path, tokenizer=tokenizer, data=data, log=None)
    assert len(result.losses) == 30
    assert result.losses[0] == pytest.approx(math.log(320), rel=0.1)  # a fresh model is near-uniform
    assert result.losses[-1] < result.losses[0] - 1.0
    assert result.tokens_per_s > 0 and 0 < result.mfu < 1
    assert result.flops == pytest.approx(6 * result.tokens * (result.non_embedding_params + 320 * 32), rel=0.3)
    from lmforge.models import load_model

    model, tok = load_model(tmp_path / "model")
    assert torch.equal(model.model.embed_tokens.weight, result.model.model.embed_tokens.weight.detach())


def test_resume_reproduces_the_uninterrupted_losses(tmp_path, tiny_data, tiny_config):
    tokenizer, data = tiny_data
    full = pretrain(tiny_config(), tmp_path / "full", tokenizer=tokenizer, data=data, log=None)
    pretrain(tiny_config(), tmp_path / "cut", tokenizer=tokenizer, data=data, stop_at_step=10, log=None)
    resumed = pretrain(tiny_config(), tmp_path / "resumed", tokenizer=tokenizer, data=data,
                       resume=tmp_path / "cut", log=None)
    assert len(resumed.losses) == 20
    assert resumed.losses == full.losses  # README: "resume to bit-identical losses"
    assert resumed.final_eval_loss == full.final_eval_loss


def test_resume_from_another_config_is_a_clear_error(tmp_path, tiny_data, tiny_config):
    tokenizer, data = tiny_data
    pretrain(tiny_config(max_steps=2), tmp_path / "a", tokenizer=tokenizer, data=data, log=None)
    with pytest.raises(LmforgeError, match="model.hidden_size=32"):
        pretrain(tiny_config(max_steps=2, model={**tiny_config().model.__dict__, "hidden_size": 64}),
                 tmp_path / "b", tokenizer=tokenizer, data=data, resume=tmp_path / "a", log=None)


def test_gradient_accumulation_matches_the_full_batch(tiny_data, tiny_config):
    tokenizer, data = tiny_data
    whole = pretrain(tiny_config(max_steps=3), tokenizer=tokenizer, data=data, log=None)
    accumulated = pretrain(tiny_config(max_steps=3, micro_batch_size=1), tokenizer=tokenizer, data=data, log=None)
    assert accumulated.losses == pytest.approx(whole.losses, abs=1e-5)


def test_bad_input_errors(tmp_path, tiny_config):
    with pytest.raises(LmforgeError, match="heads=3 does not divide"):
        tiny_config(model={"hidden_size": 32, "heads": 3, "kv_heads": 1}).validate()
    with pytest.raises(LmforgeError, match="is empty"):
        pretrain(tiny_config(), corpus=corpus_from_texts([" ", ""], name="blank"), log=None)
    with pytest.raises(LmforgeError, match="too few"):
        pretrain(tiny_config(), corpus=corpus_from_texts(["one short line"]), log=None)
    config = tmp_path / "c.yaml"
    config.write_text("model: 1m\nbatch_sise: 3\n")
    with pytest.raises(LmforgeError, match="unknown config field 'batch_sise'"):
        load_config(config)
    config.write_text("model: {preset: 1m, context_length: 64}\nmax_steps: 7\n")
    loaded = load_config(config)
    assert loaded.model.hidden_size == 96 and loaded.model.context_length == 64 and loaded.steps == 7
    from pathlib import Path

    import lmforge.train

    shipped = load_config(Path(lmforge.train.__file__).parent / "presets" / "wikitext2-3m.yaml")
    shipped.validate()
    assert shipped.model.hidden_size == 160 and shipped.steps == -(-4_000_000 // (32 * 256))
