import json

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.models import load_model, model_info, parameter_count, resolve_source


def test_save_and_load_round_trip_gives_identical_logits(tiny, tiny_folder):
    model, tokenizer = tiny
    loaded, loaded_tokenizer = load_model(tiny_folder)
    ids = torch.tensor([tokenizer.encode("Water carries sand to the sea.")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded_tokenizer.encode("erosion") == tokenizer.encode("erosion")
    assert list(tiny_folder.glob("*.safetensors")), "weights must be saved as safetensors"


def test_model_info_counts_parameters_once(tiny):
    model, tokenizer = tiny
    info = model_info(model, tokenizer)
    assert info["parameters"] == sum(p.numel() for p in model.parameters()) == parameter_count(model)
    assert info["bytes_by_dtype"]["float32"] >= 4 * info["parameters"]
    assert info["context_length"] == 256 and info["layers"] == 2


def test_truncated_safetensors_is_a_clear_error(tiny_folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_folder.iterdir():
        data = file.read_bytes()
        (broken / file.name).write_bytes(data[: len(data) // 2] if file.suffix == ".safetensors" else data)
    with pytest.raises(LmforgeError, match="truncated or damaged"):
        load_model(broken)


def _write_tiny_gguf(path):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_truncated_gguf_is_a_clear_error(tmp_path):
    path = tmp_path / "m.gguf"
    _write_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(LmforgeError, match="truncated or damaged"):
        load_model(path)
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(LmforgeError, match="not a GGUF file"):
        load_model(fake)


def test_source_resolution(tmp_path, tiny_folder):
    assert resolve_source("smollm2-135m") == ("zoo", "smollm2-135m")
    assert resolve_source(str(tiny_folder))[0] == "folder"
    assert resolve_source("HuggingFaceTB/SmolLM2-135M") == ("hub", "HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(LmforgeError, match="model not found"):
        resolve_source(str(tmp_path / "missing"))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(LmforgeError, match="not a .gguf"):
        resolve_source(other)


def test_custom_code_needs_trust_remote_code(tmp_path, tiny_folder):
    folder = tmp_path / "custom"
    folder.mkdir()
    for file in tiny_folder.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    config["model_type"] = "evil-llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError):
        load_model(folder)


def test_offline_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmforgeError, match="could not fetch"):
        load_model("someone/not-a-real-model-xyz")
