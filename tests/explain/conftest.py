import pytest

from lmforge.compress.pruning.sparsegpt import single_thread


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models run fastest on one thread; two threads spin against each other on a busy 2-core machine."""
    with single_thread():
        yield
