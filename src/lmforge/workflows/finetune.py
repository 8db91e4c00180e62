"""LoRA fine-tuning with its forgetting report: what the model learned in-domain and lost out-of-domain."""

from __future__ import annotations

import math
import os
from typing import Callable

from lmforge.data import load_corpus
from lmforge.evaluate import perplexity
from lmforge.models import load_model
from lmforge.train.finetune import FinetuneConfig, FinetuneResult, finetune


def out_of_domain_loss(tokenizer, config: FinetuneConfig) -> Callable[..., float]:
    """``loss(model)``: mean token NLL on the first ``ood_windows`` windows of ``ood_corpus`` (reference protocol)."""
    corpus = load_corpus(config.ood_corpus)

    def loss(model) -> float:
        result = perplexity(model, tokenizer, corpus, protocol="windows", seqlen=config.ood_seqlen, limit=config.ood_windows)
        return math.log(result.ppl)

    return loss


def finetune_model(model: str, config: FinetuneConfig, out_dir: str | os.PathLike, *, trust_remote_code: bool = False,
                   dtype: str | None = None, device: str | None = None, on_loaded: Callable | None = None,
                   log: Callable[[str], None] | None = print) -> FinetuneResult:
    """Load ``model``, LoRA-tune it on ``config.data`` with the forgetting report, save under ``out_dir``."""
    loaded, tokenizer = load_model(model, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    if on_loaded:
        on_loaded(loaded)
    return finetune(loaded, tokenizer, config, out_dir, out_of_domain_loss=out_of_domain_loss(tokenizer, config), log=log)
