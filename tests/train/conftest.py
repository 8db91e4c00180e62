import pytest
import torch

from lmforge.data import corpus_from_texts, load_corpus
from lmforge.train import ModelConfig, train_config

TINY = ModelConfig(hidden_size=32, layers=2, heads=2, kv_heads=1, intermediate_size=64, vocab_size=320, context_length=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls run fastest on one thread, and far slower on two when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_corpus():
    """Three real WikiText-2 articles (about 40k characters)."""
    return corpus_from_texts(list(load_corpus("wikitext2").documents(limit=3)), name="wikitext2-3")


@pytest.fixture(scope="session")
def tiny_data(small_corpus):
    from lmforge.train import prepare_data

    return prepare_data(make_tiny_config(), small_corpus)


@pytest.fixture
def tiny_config():
    return make_tiny_config


def make_tiny_config(**overrides):
    values = dict(model=dict(TINY.__dict__), batch_size=4, max_steps=20, lr=3e-3, warmup_steps=4, eval_interval=10,
                  eval_batches=2, log_interval=10, val_fraction=0.1)
    return train_config({**values, **overrides})
