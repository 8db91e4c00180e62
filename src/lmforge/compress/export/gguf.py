"""Export a quantized llama to GGUF, the single-file format of llama.cpp (also read by transformers).

GGML stores a quantized matrix row by row in blocks of 32 weights, each block with its own fp16 scale:
``Q4_0`` is ``w = (q - 8) · d`` with 4-bit ``q``, ``Q4_1`` is ``w = q · d + m``, ``Q8_0`` is ``w = i8 · d``.
Our grids are the same formulas per group (``w = (q - zero) · scale``), so a group of 64 is two blocks
with equal ``d`` and the codes are copied, never re-quantized:

    symmetric int4 (zero 8)       → Q4_0   d = scale
    asymmetric int4               → Q4_1   d = scale, m = -zero · scale
    symmetric int8 (zero 128)     → Q8_0   d = scale, i8 = q - 128

The only loss is ``d`` and ``m`` rounded to fp16 (relative error ≤ 2⁻¹¹). Grids without an exact
block type (int2/int3, asymmetric int8, group sizes that are not a multiple of 32) and unfolded
activation-aware input scales are refused. Norms and embeddings are written as F32 (embeddings as
F16 on request), so a file loaded back dequantizes to our model's weights up to that fp16 rounding.

llama.cpp's converter orders the rows of ``attn_q``/``attn_k`` so that the two rotary halves of each
head are interleaved; we apply the same row permutation to codes, scales and zeros together, which
is exact. Loaders (llama.cpp, transformers) undo it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType, TokenType

from lmforge.compress.export.compressed_tensors import quantized_linears, unquantized_tensors
from lmforge.compress.storage.qlinear import QuantLinear
from lmforge.errors import LmforgeError
from lmforge.io import atomic_path
from lmforge.models.gguf_source import read_gguf
from lmforge.models.loading import read_metadata

BLOCK = 32  # weights per GGML block of the Q4_0, Q4_1 and Q8_0 types

FILE_TYPES = {
    GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    GGMLQuantizationType.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1,
    GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}

# The pre-tokenizers of transformers' byte-level BPE tokenizers that llama.cpp knows by name (tokenizer.ggml.pre).
_GPT2_BYTES = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_SINGLE_DIGITS = {"type": "Digits", "individual_digits": True}
PRE_TOKENIZERS = {
    "gpt-2": [_GPT2_BYTES],
    "smollm": [_SINGLE_DIGITS, _GPT2_BYTES],  # SmolLM/SmolLM2 split digits one by one, then GPT-2's regex
}


def ggml_type(bits: int, group_size: int | None, symmetric: bool, what: str) -> GGMLQuantizationType:
    """The GGML block type that holds this grid exactly; a one-line error naming ``what`` if none does."""
    if bits not in (4, 8):
        raise LmforgeError(f"{what}: int{bits} has no exact GGUF block type (Q2_K/Q3_K are k-quants with their own "
                           "sub-block scales); quantize with --bits 4 or 8 to export GGUF")
    if group_size is not None and group_size % BLOCK:
        raise LmforgeError(f"{what}: group size {group_size} is not a multiple of {BLOCK}, the GGUF block size; "
                           "quantize with --group-size 32, 64 or 128")
    if bits == 8 and not symmetric:
        raise LmforgeError(f"{what}: asymmetric int8 has no GGUF block type (Q8_0 is symmetric); quantize with --symmetric")
    if bits == 8:
        return GGMLQuantizationType.Q8_0
    return GGMLQuantizationType.Q4_0 if symmetric else GGMLQuantizationType.Q4_1


def layer_type(name: str, module: QuantLinear) -> GGMLQuantizationType:
    if module.input_scale is not None:
        raise LmforgeError(f"{name} keeps an activation-aware input scale that GGUF cannot express; "
                           "export a GPTQ or RTN model")
    symmetric = bool((module.zeros == 2 ** (module.bits - 1)).all())
    return ggml_type(module.bits, module.group_size, symmetric, name)


def _fp16_bytes(values: torch.Tensor) -> torch.Tensor:
    """``[rows, blocks]`` float → ``[rows, blocks, 2]`` bytes of its fp16 rounding (little-endian, as GGUF)."""
    return values.to(torch.float16).view(torch.uint8).reshape(*values.shape, 2)


def block_bytes(module: QuantLinear, qtype: GGMLQuantizationType, rows: torch.Tensor) -> np.ndarray:
    """The layer's rows ``rows`` as GGML blocks: ``uint8 [len(rows), in_features / 32 · bytes per block]``."""
    codes = module.codes()[rows].to(torch.int16)
    count, cols = codes.shape
    blocks = codes.reshape(count, cols // BLOCK, BLOCK)
    per_group = module.group_size // BLOCK
    scale = module.scales[rows].repeat_interleave(per_group, dim=1)
    if qtype == GGMLQuantizationType.Q8_0:
        parts = [_fp16_bytes(scale), (blocks - 128).to(torch.int8).view(torch.uint8)]
    else:
        # a Q4 block keeps weight j in the low nibble of byte j and weight j + 16 in its high nibble
        nibbles = (blocks[..., : BLOCK // 2] | blocks[..., BLOCK // 2:] << 4).to(torch.uint8)
        parts = [_fp16_bytes(scale), nibbles]
        if qtype == GGMLQuantizationType.Q4_1:
            zero = module.zeros[rows].float().repeat_interleave(per_group, dim=1)
            parts.insert(1, _fp16_bytes(-zero * scale))
    return torch.cat(parts, dim=-1).reshape(count, -1).numpy()


def rotary_rows(rows: int, heads: int) -> torch.Tensor:
    """The row order llama.cpp's converter gives ``attn_q``/``attn_k`` (its ``permute``): within each head,
    rows ``i`` and ``i + head_dim / 2`` (the two halves of a rotary pair) become neighbours."""
    return torch.arange(rows).reshape(heads, 2, rows // heads // 2).transpose(1, 2).reshape(rows)


def _row_order(name: str, rows: int, config) -> torch.Tensor:
    if name.endswith("self_attn.q_proj"):
        return rotary_rows(rows, config.num_attention_heads)
    if name.endswith("self_attn.k_proj"):
        return rotary_rows(rows, config.num_key_value_heads)
    return torch.arange(rows)


def _recorded_pre_tokenizer(model) -> str | None:
    """``tokenizer.ggml.pre`` of the GGUF the model was converted from, when lmforge recorded that file."""
    folder = model.name_or_path
    if not folder or not Path(folder).is_dir():
        return None
    source = (read_metadata(folder).get("source_quantization") or {}).get("file")
    if not source or not Path(source).is_file():
        return None
    field = read_gguf(source).get_field("tokenizer.ggml.pre")
    return field.contents() if field is not None else None


def pre_tokenizer_name(model, tokenizer) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE: the one recorded in the model's
    source GGUF, else the one whose pre-tokenizer matches ours (a SmolLM2 tokenizer gives "smollm")."""
    recorded = _recorded_pre_tokenizer(model)
    if recorded:
        return recorded
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = spec["pretokenizers"] if spec.get("type") == "Sequence" else [spec]
    for name, expected in PRE_TOKENIZERS.items():  # the same steps in order, each with at least these settings
        if len(steps) == len(expected) and all(step.items() >= want.items() for step, want in zip(steps, expected)):
            return name
    kinds = "+".join(str(step.get("type")) for step in steps)
    raise LmforgeError(f"llama.cpp has no known name for this tokenizer's pre-tokenizer ({kinds}); pass "
                       "pre_tokenizer= with llama.cpp's tokenizer.ggml.pre value for it (e.g. 'llama-bpe')")


def _added_specials(tokenizer) -> tuple[bool, bool]:
    """Whether encoding adds BOS in front and EOS at the end, found by encoding one character."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a")
    front = 1 if full[1:1 + len(plain)] == plain else 0
    return full[:front] == [tokenizer.bos_token_id], full[front + len(plain):] == [tokenizer.eos_token_id]


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int, pre: str) -> None:
    """Vocabulary in id order (ids the tokenizer lacks padded as unused), merges, special ids and chat template."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if backend.get("type") != "BPE":
        raise LmforgeError(f"GGUF export writes byte-level BPE tokenizers (GPT-2 style); this one is {backend.get('type')}")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise LmforgeError(f"the tokenizer has ids up to {max(by_id)} but the model's vocabulary has {vocab_size} rows")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
        else:
            tokens.append(by_id[index])
            types.append(TokenType.NORMAL if index not in added
                         else TokenType.CONTROL if added[index].special else TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in backend["merges"]])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    add_bos, add_eos = _added_specials(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def add_hyperparameters(writer: gguf.GGUFWriter, config) -> None:
    rope = config.rope_parameters
    if rope.get("rope_type", "default") != "default":
        raise LmforgeError(f"the model uses '{rope['rope_type']}' rope scaling; the GGUF export writes plain rope only")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def export_gguf(model, tokenizer, path: str | os.PathLike, *, embeddings: str = "f32",
                pre_tokenizer: str | None = None) -> Path:
    """Write the quantized llama ``model`` and its byte-level BPE ``tokenizer`` as one GGUF file, atomically.

    ``embeddings``: "f32" (exact) or "f16" (half the size, rounds the embedding and an untied output matrix).
    ``pre_tokenizer``: llama.cpp's name for the tokenizer's text splitting; found from the tokenizer if omitted.
    """
    config = model.config
    if config.model_type != "llama":
        raise LmforgeError(f"GGUF export writes llama models (SmolLM2 is one); this model is '{config.model_type}'")
    if embeddings not in ("f32", "f16"):
        raise LmforgeError(f"embeddings='{embeddings}' is not supported; use 'f32' or 'f16'")
    quantized = quantized_linears(model)
    types = {name: layer_type(name, module) for name, module in quantized.items()}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    def gguf_name(key: str) -> str:
        mapped = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise LmforgeError(f"{key} has no llama.cpp tensor name; the GGUF export writes plain llama weights only")
        return mapped

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, "llama")
        writer.add_name(path.stem)
        add_hyperparameters(writer, config)
        writer.add_file_type(FILE_TYPES[Counter(types.values()).most_common(1)[0][0]])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(writer, tokenizer, config.vocab_size, pre_tokenizer or pre_tokenizer_name(model, tokenizer))
        for name, module in quantized.items():
            rows = _row_order(name, module.out_features, config)
            writer.add_tensor(gguf_name(f"{name}.weight"), block_bytes(module, types[name], rows), raw_dtype=types[name])
            if module.bias is not None:
                writer.add_tensor(gguf_name(f"{name}.bias"), module.bias[rows].float().numpy())
        for key, tensor in unquantized_tensors(model, quantized):  # a tied lm_head: llama.cpp reuses token_embd
            target = gguf_name(key)
            tensor = tensor[_row_order(key.rpartition(".")[0], tensor.shape[0], config)]
            half = embeddings == "f16" and target in ("token_embd.weight", "output.weight")
            writer.add_tensor(target, tensor.to(torch.float16 if half else torch.float32).numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
