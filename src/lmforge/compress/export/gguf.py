"""Export a model to GGUF, the single-file format of llama.cpp and Ollama (also read by transformers).

Two routes. A model lmforge already quantized keeps its codes (below). A full-precision model is written as
F32/F16/BF16, or quantized into GGML's block types by a recipe (``gguf_recipes``: Q4_0 … Q8_0, Q4_K_M …),
with round to nearest or, given calibration tokens, GPTQ onto the block grids themselves (``gguf_gptq``).
The tokenizer and its chat template are embedded, so llama.cpp and Ollama need nothing else.

Architectures: those llama.cpp runs whose tensors map one to one through gguf-py's tensor-name tables
(``ARCHITECTURES``); llama's q/k rows are reordered as llama.cpp's converter does (below).

Codes lmforge already holds:

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
(To write such a model in another type, export the full-precision model with that recipe.)

llama.cpp's converter orders the rows of ``attn_q``/``attn_k`` so that the two rotary halves of each
head are interleaved; we apply the same row permutation to codes, scales and zeros together, which
is exact. Loaders (llama.cpp, transformers) undo it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from dataclasses import dataclass, field

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType, TokenType

from lmforge.compress.export.compressed_tensors import quantized_linears, unquantized_tensors
from lmforge.compress.export.gguf_gptq import gptq_block_codes
from lmforge.compress.export.gguf_quants import FORMATS, pack_rows
from lmforge.compress.export.gguf_recipes import RECIPES, plan_types
from lmforge.compress.storage.qlinear import QuantLinear
from lmforge.errors import LmforgeError
from lmforge.io import atomic_path
from lmforge.models.gguf_source import read_gguf
from lmforge.models.loading import read_metadata

BLOCK = 32  # weights per GGML block of the Q4_0, Q4_1 and Q8_0 types

FILE_TYPE_OF_RECIPE = {name: gguf.LlamaFileType.ALL_F32 if name == "F32" else getattr(gguf.LlamaFileType, f"MOSTLY_{name}")
                       for name in RECIPES}
FILE_TYPES = {GGMLQuantizationType[name]: FILE_TYPE_OF_RECIPE[name] for name in ("Q4_0", "Q4_1", "Q8_0")}

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


def block_bytes(module: QuantLinear, qtype: GGMLQuantizationType, rows: torch.Tensor) -> np.ndarray:
    """The layer's rows ``rows`` as GGML blocks: ``uint8 [len(rows), in_features / 32 · bytes per block]``.
    Our group's scale becomes each of its blocks' ``d`` (Q4_1: ``m = -zero · d``); the codes are copied."""
    fmt = FORMATS[qtype.name]
    per_group = module.group_size // BLOCK
    scale = module.scales[rows].repeat_interleave(per_group, dim=1)
    grid = {"d": scale}
    if qtype == GGMLQuantizationType.Q4_1:
        grid["m"] = -module.zeros[rows].float().repeat_interleave(per_group, dim=1) * scale
    return pack_rows(fmt, module.codes()[rows].float(), grid)


def rotary_rows(rows: int, heads: int) -> torch.Tensor:
    """The row order llama.cpp's converter gives ``attn_q``/``attn_k`` (its ``permute``): within each head,
    rows ``i`` and ``i + head_dim / 2`` (the two halves of a rotary pair) become neighbours."""
    return torch.arange(rows).reshape(heads, 2, rows // heads // 2).transpose(1, 2).reshape(rows)


def neox_qkv_rows(rows: int, heads: int) -> torch.Tensor:
    """GPT-NeoX's fused ``query_key_value`` holds, per head, its q, k and v rows; llama.cpp reads all q rows,
    then all k, then all v (its converter regroups them the same way)."""
    return torch.arange(rows).reshape(heads, 3, rows // heads // 3).transpose(0, 1).reshape(rows)


def _row_order(name: str, rows: int, config) -> torch.Tensor:
    if config.model_type == "gpt_neox" and name.endswith("attention.query_key_value"):
        return neox_qkv_rows(rows, config.num_attention_heads)
    if not architecture(config).rotary_rows:
        return torch.arange(rows)
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


@dataclass(frozen=True)
class Architecture:
    """How one transformers model type is written: gguf-py's architecture (its tensor-name table) and whether
    llama.cpp's converter reorders the q/k rows (rotary halves interleaved) for it."""

    gguf_arch: gguf.MODEL_ARCH
    rotary_rows: bool
    norm_plus_one: bool = False  # Gemma's RMSNorm scales by (1 + w); llama.cpp's by w, so the file holds 1 + w


def _gemma2_keys(writer: gguf.GGUFWriter, config) -> None:
    writer.add_sliding_window(config.sliding_window)
    writer.add_attn_logit_softcapping(config.attn_logit_softcapping or 0.0)
    writer.add_final_logit_softcapping(config.final_logit_softcapping or 0.0)
    if config.query_pre_attn_scalar != config.head_dim:
        raise LmforgeError(f"llama.cpp scales Gemma-2 attention by head_dim ({config.head_dim}); this model uses "
                           f"query_pre_attn_scalar={config.query_pre_attn_scalar}, which the GGUF cannot express")


EXTRA_KEYS = {"gemma2": _gemma2_keys}


ARCHITECTURES = {
    "llama": Architecture(gguf.MODEL_ARCH.LLAMA, True),
    "mistral": Architecture(gguf.MODEL_ARCH.LLAMA, True),  # llama.cpp runs Mistral as llama
    "qwen2": Architecture(gguf.MODEL_ARCH.QWEN2, False),
    "qwen3": Architecture(gguf.MODEL_ARCH.QWEN3, False),
    "phi3": Architecture(gguf.MODEL_ARCH.PHI3, False),  # fused qkv_proj and gate_up_proj, as llama.cpp reads them
    "gemma2": Architecture(gguf.MODEL_ARCH.GEMMA2, False, norm_plus_one=True),
    "gpt2": Architecture(gguf.MODEL_ARCH.GPT2, False),  # Conv1D weights are stored [in, out]: transposed
    "gpt_neox": Architecture(gguf.MODEL_ARCH.GPTNEOX, False),  # fused qkv rows regrouped (below)
}


NOT_IN_LLAMA_CPP = ("opt",)


def architecture(config) -> Architecture:
    found = ARCHITECTURES.get(config.model_type)
    if found is None:
        runs = "does not run" if config.model_type in NOT_IN_LLAMA_CPP else "runs, but this export does not write,"
        raise LmforgeError(f"llama.cpp {runs} '{config.model_type}' models, so GGUF export cannot write them; "
                           f"it writes {', '.join(sorted(ARCHITECTURES))}")
    return found


def _rope(config) -> dict:
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": config.rope_theta}
    if rope.get("rope_type", "default") != "default":
        raise LmforgeError(f"the model uses '{rope['rope_type']}' rope scaling; the GGUF export writes plain rope only")
    return rope


def add_hyperparameters(writer: gguf.GGUFWriter, config) -> None:
    kind = architecture(config)
    heads = config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(heads)
    writer.add_vocab_size(config.vocab_size)
    if kind.gguf_arch == gguf.MODEL_ARCH.GPT2:  # learned positions, LayerNorm
        writer.add_feed_forward_length(config.n_inner or 4 * config.hidden_size)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    writer.add_feed_forward_length(config.intermediate_size)
    rope = _rope(config)
    writer.add_rope_freq_base(rope["rope_theta"])
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if kind.gguf_arch == gguf.MODEL_ARCH.GPTNEOX:  # LayerNorm, rotary on part of each head, parallel residual
        writer.add_head_count_kv(heads)
        writer.add_rope_dimension_count(int(rope.get("partial_rotary_factor", 1.0) * head_dim))
        writer.add_parallel_residual(config.use_parallel_residual)
        writer.add_layer_norm_eps(config.layer_norm_eps)
        return
    writer.add_head_count_kv(config.num_key_value_heads)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if config.model_type in EXTRA_KEYS:
        EXTRA_KEYS[config.model_type](writer, config)


def _stored(key: str, tensor: torch.Tensor, config) -> torch.Tensor:
    """A tensor as llama.cpp reads it: q/k rows reordered for llama; Gemma's norm weights as 1 + w."""
    tensor = tensor[_row_order(key.removesuffix(".weight").removesuffix(".bias"), tensor.shape[0], config)]
    if architecture(config).norm_plus_one and tensor.dim() == 1 and "norm" in key:
        tensor = tensor.float() + 1
    return tensor


@dataclass
class GGUFExport:
    """What ``export_gguf`` wrote: the file, each tensor's GGML type, and the fallbacks taken."""

    path: Path
    types: dict[str, str]
    fallbacks: dict[str, str] = field(default_factory=dict)


def _writer_for(tmp: Path, path: Path, model, tokenizer, pre_tokenizer: str | None, file_type) -> gguf.GGUFWriter:
    config = model.config
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[architecture(config).gguf_arch])
    writer.add_name(path.stem)
    add_hyperparameters(writer, config)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(writer, tokenizer, config.vocab_size, pre_tokenizer or pre_tokenizer_name(model, tokenizer))
    return writer


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _namer(config):
    names = gguf.get_tensor_name_map(architecture(config).gguf_arch, config.num_hidden_layers)

    def gguf_name(key: str) -> str:
        mapped = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise LmforgeError(f"{key} has no llama.cpp tensor name for '{config.model_type}'; the GGUF export writes "
                               "the standard transformers layout only")
        return mapped
    return gguf_name


def export_gguf(model, tokenizer, path: str | os.PathLike, recipe: str | None = None, *, calibration: torch.Tensor | None = None,
                embeddings: str = "f32", pre_tokenizer: str | None = None, progress=None) -> GGUFExport:
    """Write ``model`` and its byte-level BPE ``tokenizer`` as one GGUF file, atomically.

    A quantized model keeps its codes (``recipe`` may only name that type). A full-precision one is written
    with ``recipe`` (``gguf_recipes.RECIPES``: F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, ...; default F32): round to
    nearest, or GPTQ on the block grids when ``calibration`` tokens ``[n, seqlen]`` are given.
    ``embeddings`` ("f32" or "f16"): the embeddings' type next to codes lmforge already holds.
    ``pre_tokenizer``: llama.cpp's name for the tokenizer's text splitting; found from the tokenizer if omitted.
    ``progress(n)``: called per decoder layer calibrated.
    """
    architecture(model.config)
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        if calibration is not None:
            raise LmforgeError("the model is already quantized, so there is nothing to calibrate; export the "
                               "full-precision model to quantize it with GPTQ into GGUF types")
        return _export_quantized(model, tokenizer, Path(path), recipe, embeddings, pre_tokenizer)
    return _export_full_precision(model, tokenizer, Path(path), recipe or "F32", calibration, pre_tokenizer, progress)


def _export_quantized(model, tokenizer, path: Path, recipe, embeddings, pre_tokenizer) -> GGUFExport:
    config = model.config
    if embeddings not in ("f32", "f16"):
        raise LmforgeError(f"embeddings='{embeddings}' is not supported; use 'f32' or 'f16'")
    quantized = quantized_linears(model)
    types = {name: layer_type(name, module) for name, module in quantized.items()}
    main = Counter(types.values()).most_common(1)[0][0]
    if recipe is not None and recipe != main.name:
        raise LmforgeError(f"the model holds {main.name} codes, so its GGUF is {main.name}, not {recipe}; export the "
                           "full-precision model to write other types")
    gguf_name = _namer(config)
    written: dict[str, str] = {}
    with atomic_path(path) as tmp:
        writer = _writer_for(tmp, path, model, tokenizer, pre_tokenizer, FILE_TYPES[main])
        for name, module in quantized.items():
            rows = _row_order(name, module.out_features, config)
            target = gguf_name(f"{name}.weight")
            writer.add_tensor(target, block_bytes(module, types[name], rows), raw_dtype=types[name])
            written[target] = types[name].name
            if module.bias is not None:
                writer.add_tensor(gguf_name(f"{name}.bias"), module.bias[rows].float().numpy())
        for key, tensor in unquantized_tensors(model, quantized):  # a tied lm_head: llama.cpp reuses token_embd
            target = gguf_name(key)
            tensor = _stored(key, tensor, config)
            half = embeddings == "f16" and target in ("token_embd.weight", "output.weight")
            writer.add_tensor(target, tensor.to(torch.float16 if half else torch.float32).numpy())
            written[target] = "F16" if half else "F32"
        _finish(writer)
    return GGUFExport(path, written)


def _float_bytes(tensor: torch.Tensor, type_name: str) -> tuple[np.ndarray, GGMLQuantizationType]:
    if type_name == "BF16":  # gguf-py's converter rounds to nearest even, as ggml does
        return gguf.quants.quantize(tensor.float().numpy(), GGMLQuantizationType.BF16), GGMLQuantizationType.BF16
    dtype = np.float16 if type_name == "F16" else np.float32
    return tensor.float().numpy().astype(dtype), GGMLQuantizationType[type_name]


def _export_full_precision(model, tokenizer, path: Path, recipe: str, calibration, pre_tokenizer, progress) -> GGUFExport:
    config = model.config
    gguf_name = _namer(config)
    conv1d = {f"{name}.weight" for name, module in model.named_modules() if type(module).__name__ == "Conv1D"}
    # GPT-2's Conv1D keeps its weight as [in, out]: GGML rows are outputs, so transpose before quantizing
    tensors = {key: tensor.t() if key in conv1d else tensor for key, tensor in unquantized_tensors(model, {})}
    names = {key: gguf_name(key) for key in tensors}
    matrices = {names[k]: t.shape[1] for k, t in tensors.items() if t.dim() == 2}
    plan = plan_types(recipe, matrices, config.num_hidden_layers)
    formats = {key.removesuffix(".weight"): FORMATS[plan.types[names[key]]] for key, t in tensors.items()
               if t.dim() == 2 and plan.types[names[key]] in FORMATS}
    calibrated = {}
    if calibration is not None:
        linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        calibrated = gptq_block_codes(model, calibration, {n: f for n, f in formats.items() if n in linears},
                                      progress=progress)
    with atomic_path(path) as tmp:
        writer = _writer_for(tmp, path, model, tokenizer, pre_tokenizer, FILE_TYPE_OF_RECIPE[recipe])
        for key, tensor in tensors.items():
            target = names[key]
            if tensor.dim() != 2 or plan.types[target] not in FORMATS:
                data, qtype = _float_bytes(_stored(key, tensor, config), plan.types.get(target, "F32"))
            else:
                fmt, module = FORMATS[plan.types[target]], key.removesuffix(".weight")
                codes, grid = calibrated.get(module) or fmt.quantize(tensor)
                rows = _row_order(module, tensor.shape[0], config)  # rows are quantized independently
                data, qtype = pack_rows(fmt, codes, grid)[rows.numpy()], fmt.qtype
            writer.add_tensor(target, data, raw_dtype=qtype)
        _finish(writer)
    return GGUFExport(path, {names[k]: plan.types.get(names[k], "F32") for k in tensors}, plan.fallbacks)
