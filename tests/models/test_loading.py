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


# A real custom-code model: its modeling file subclasses llama and marks every forward pass, so the test can tell
# whether the folder's own code ran (with the flag) or nothing was loaded at all (without it).
CUSTOM_MODELING = """
from transformers import LlamaConfig, LlamaForCausalLM


class MarkedConfig(LlamaConfig):
    model_type = "marked-llama"


class MarkedForCausalLM(LlamaForCausalLM):
    config_class = MarkedConfig

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits[..., 0] = 1234.5  # a mark only this file's code leaves
        return out
"""


def test_custom_code_needs_trust_remote_code(tmp_path, tiny_folder):
    folder = tmp_path / "custom"
    folder.mkdir()
    for file in tiny_folder.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "modeling_marked.py").write_text(CUSTOM_MODELING)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "marked-llama"
    config["architectures"] = ["MarkedForCausalLM"]
    config["auto_map"] = {"AutoConfig": "modeling_marked.MarkedConfig",
                          "AutoModelForCausalLM": "modeling_marked.MarkedForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError, match=r"needs custom code; pass --trust-remote-code if you trust its author"):
        load_model(folder)
    model, tokenizer = load_model(folder, trust_remote_code=True)
    assert type(model).__name__ == "MarkedForCausalLM"
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode("sand")])).logits
    assert (logits[..., 0] == 1234.5).all()


def test_offline_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmforgeError, match="could not fetch"):
        load_model("someone/not-a-real-model-xyz")
