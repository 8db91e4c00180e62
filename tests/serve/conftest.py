import pytest


@pytest.fixture(scope="session")
def tiny():
    from lmforge.models import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(seed=3)
