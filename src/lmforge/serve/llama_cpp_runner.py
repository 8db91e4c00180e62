"""The model side of continuous batching on llama.cpp, in process (llama-cpp-python's low-level API).

Same interface as ``ModelRunner`` (``prefill``, ``decode``, ``retire``, ``reset``, ``embed``, ``rows``), so the
scheduler, sampling, log-probabilities, stops, grammars and tools stay lmforge's; only the forward runs in
llama.cpp. Each running row is a llama.cpp sequence id taken from a free pool; one context holds
``n_seq_max`` sequences in one unified KV cache of ``n_seq_max × context`` cells, so every row can reach the
full per-sequence context. A newcomer is prefilled alone under its own sequence id; ``copies`` > 1 share
its prompt's cells (``llama_memory_seq_cp``). A decode step is one ``llama_decode`` of one token per row.
A retired row's cells are removed (``llama_memory_seq_rm``) and its id goes back to the pool.

Everything handed to native code is checked first (token ids within the vocabulary, batch capacity,
positions within the context, null pointers), so a bad input is a one-line ``LmforgeError``, not a crash.
The weights stay on llama.cpp's plain CPU buffers (``use_extra_bufts = False``): its repacked (AMX /
AVX-512) buffers crash llama_decode on some CPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from lmforge.errors import LmforgeError

INSTALL_HINT = "pip install 'lmforge[llama]'"
DEFAULT_CONTEXT = 2048  # per sequence, when the model was trained on more (the KV cache holds n_seq_max of them)


def import_llama_cpp():
    """llama-cpp-python's native bindings, or a one-line error naming the extra."""
    try:
        import llama_cpp
        from llama_cpp._logger import set_verbose
    except ImportError as exc:
        raise LmforgeError(f"the llama.cpp engine needs llama-cpp-python: {INSTALL_HINT} ({exc})") from None
    set_verbose(False)  # llama.cpp's loading chatter off; its errors still reach stderr
    return llama_cpp


def llama_cpp_version() -> str | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    return getattr(llama_cpp, "__version__", "?")


class LlamaCppRunner:
    def __init__(self, path: str | os.PathLike, n_seq_max: int = 8, context: int | None = None,
                 threads: int | None = None, n_batch: int = 512):
        self.native = lib = import_llama_cpp()
        self.path = Path(path)
        if not self.path.is_file():
            raise LmforgeError(f"{self.path} does not exist; pass a .gguf file")
        if n_seq_max < 1 or n_batch < 1:
            raise LmforgeError(f"n_seq_max and n_batch must be at least 1 (got {n_seq_max}, {n_batch})")
        self.threads = threads or torch.get_num_threads()
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        model_params.use_extra_bufts = False  # plain CPU buffers (see the module docstring)
        model_params.n_gpu_layers = 0
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self._model:
            raise LmforgeError(f"llama.cpp could not load {self.path}; is it a GGUF of an architecture llama.cpp runs?")
        self._vocab = lib.llama_model_get_vocab(self._model)
        if not self._vocab:
            self.close()
            raise LmforgeError(f"{self.path} has no vocabulary llama.cpp can read")
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        trained = lib.llama_model_n_ctx_train(self._model)
        self.context = min(context or min(trained, DEFAULT_CONTEXT), trained)
        self.n_seq_max, self.n_batch = n_seq_max, min(n_batch, self.context)
        params = lib.llama_context_default_params()
        params.n_ctx = self.context * n_seq_max
        params.n_batch = params.n_ubatch = max(self.n_batch, n_seq_max)
        params.n_seq_max = n_seq_max
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = True  # one cell pool for all sequences: copies share their prompt's cells
        params.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            self.close()
            raise LmforgeError(f"llama.cpp could not make a context of {params.n_ctx} tokens for {self.path}")
        self._memory = lib.llama_get_memory(self._ctx)
        self.capacity = max(self.n_batch, n_seq_max)
        self._batch = lib.llama_batch_init(self.capacity, 0, 1)
        self._embed_ctx = None
        eos = [lib.llama_vocab_eos(self._vocab), lib.llama_vocab_eot(self._vocab)]
        # What the server reads from a model: its context (prompt limits) and its vocabulary and end tokens.
        self.config = SimpleNamespace(max_position_embeddings=self.context, vocab_size=self.n_vocab)
        self.generation_config = SimpleNamespace(eos_token_id=[t for t in eos if 0 <= t < self.n_vocab])
        self.reset()

    # -- the runner interface ----------------------------------------------------------------------------

    def reset(self) -> None:
        self.native.llama_memory_clear(self._memory, True)
        self.seqs: list[int] = []  # llama.cpp sequence id of each row, in row order
        self.positions: list[int] = []  # next position of each row
        self.free = list(range(self.n_seq_max - 1, -1, -1))  # a stack: the lowest id is taken first

    @property
    def rows(self) -> int:
        return len(self.seqs)

    def prefill(self, prompt_ids: list[int], copies: int = 1, all_logits: bool = False) -> torch.Tensor:
        """Run the prompt, add ``copies`` rows for it; the logits of its last position (every position if asked)."""
        ids = self._check_ids(prompt_ids)
        if not ids:
            raise LmforgeError("the prompt is empty; llama.cpp needs at least one token")
        if len(ids) >= self.context:
            raise LmforgeError(f"the prompt has {len(ids)} tokens; llama.cpp's context here holds {self.context}")
        if copies < 1 or copies > len(self.free):
            raise LmforgeError(f"{copies} copies asked but {len(self.free)} of {self.n_seq_max} llama.cpp "
                               "sequences are free")
        seq = self.free.pop()
        outputs = []
        try:
            for start in range(0, len(ids), self.n_batch):
                chunk = ids[start:start + self.n_batch]
                last = start + len(chunk) == len(ids)
                flags = [all_logits or (last and i == len(chunk) - 1) for i in range(len(chunk))]
                self._fill([(token, start + i, seq, flag) for i, (token, flag) in enumerate(zip(chunk, flags))])
                self._decode()
                outputs.append(self._logits([i for i, flag in enumerate(flags) if flag]))
        except BaseException:
            self.native.llama_memory_seq_rm(self._memory, seq, -1, -1)
            self.free.append(seq)
            raise
        self.seqs.append(seq)
        self.positions.append(len(ids))
        for _ in range(copies - 1):
            other = self.free.pop()
            self.native.llama_memory_seq_cp(self._memory, seq, other, -1, -1)
            self.seqs.append(other)
            self.positions.append(len(ids))
        return torch.cat(outputs)

    def decode(self, tokens: list[int]) -> torch.Tensor:
        """One step for every row (``tokens[i]`` is row i's last token); the next-token logits, ``[rows, vocab]``."""
        if len(tokens) != self.rows:
            raise LmforgeError(f"decode got {len(tokens)} tokens for {self.rows} running rows")
        ids = self._check_ids(tokens)
        if self.positions and max(self.positions) >= self.context:
            raise LmforgeError(f"a sequence reached llama.cpp's context of {self.context} tokens")
        self._fill([(token, pos, seq, True) for token, pos, seq in zip(ids, self.positions, self.seqs)])
        self._decode()
        self.positions = [p + 1 for p in self.positions]
        return self._logits(range(len(ids)))

    def retire(self, rows: list[int]) -> None:
        """Drop these rows: their sequences' KV cells are removed and their ids go back to the pool."""
        dropped = set(rows)
        for row in sorted(dropped):
            if not 0 <= row < self.rows:
                raise LmforgeError(f"row {row} is not running ({self.rows} rows)")
            self.native.llama_memory_seq_rm(self._memory, self.seqs[row], -1, -1)
            self.free.append(self.seqs[row])
        self.seqs = [s for row, s in enumerate(self.seqs) if row not in dropped]
        self.positions = [p for row, p in enumerate(self.positions) if row not in dropped]
        self.free.sort(reverse=True)

    def embed(self, ids: list[int]) -> list[float]:
        """Mean of the last (normed) hidden states over the tokens, as ``ModelRunner.embed``; its own context."""
        lib = self.native
        ids = self._check_ids(ids)
        if not ids or len(ids) > self.context:
            raise LmforgeError(f"embeddings take 1 to {self.context} tokens here (got {len(ids)})")
        if self._embed_ctx is None:
            params = lib.llama_context_default_params()
            params.n_ctx = params.n_batch = params.n_ubatch = self.context
            params.n_seq_max, params.embeddings = 1, True
            params.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
            params.n_threads = params.n_threads_batch = self.threads
            self._embed_ctx = lib.llama_init_from_model(self._model, params)
            if not self._embed_ctx:
                raise LmforgeError("llama.cpp could not make an embedding context")
        lib.llama_memory_clear(lib.llama_get_memory(self._embed_ctx), True)
        batch = lib.llama_batch_init(len(ids), 0, 1)
        try:
            _fill(batch, [(token, pos, 0, True) for pos, token in enumerate(ids)])
            if (rc := lib.llama_decode(self._embed_ctx, batch)) != 0:
                raise LmforgeError(f"llama.cpp's llama_decode failed ({rc}) computing embeddings")
        finally:
            lib.llama_batch_free(batch)
        pointer = lib.llama_get_embeddings_seq(self._embed_ctx, 0)
        if not pointer:
            raise LmforgeError("llama.cpp returned no pooled embedding")
        return np.ctypeslib.as_array(pointer, shape=(lib.llama_model_n_embd(self._model),)).astype(float).tolist()

    # -- llama.cpp's own tokenizer (tests compare it with the transformers tokenizer) ---------------------

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        out = (self.native.llama_token * size)()
        n = self.native.llama_tokenize(self._vocab, data, len(data), out, size, add_special, False)
        if n < 0:
            raise LmforgeError(f"llama.cpp's tokenizer needs {-n} slots for {len(data)} bytes")
        return list(out[:n])

    # -- helpers -----------------------------------------------------------------------------------------

    def _check_ids(self, ids) -> list[int]:
        ids = [int(t) for t in ids]
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise LmforgeError(f"token id {bad[0]} is outside the model's vocabulary of {self.n_vocab}")
        return ids

    def _fill(self, entries) -> None:
        if len(entries) > self.capacity:
            raise LmforgeError(f"{len(entries)} tokens do not fit llama.cpp's batch of {self.capacity}")
        _fill(self._batch, entries)

    def _decode(self) -> None:
        rc = self.native.llama_decode(self._ctx, self._batch)
        if rc != 0:
            reason = {1: "no room left in the KV cache", 2: "aborted", -1: "invalid batch"}.get(rc, "fatal error")
            raise LmforgeError(f"llama.cpp's llama_decode failed ({rc}: {reason}) with {self.rows} rows running")

    def _logits(self, positions) -> torch.Tensor:
        """The logits the last decode computed at these batch positions, ``[len(positions), vocab]``."""
        rows = []
        for i in positions:
            pointer = self.native.llama_get_logits_ith(self._ctx, i)
            if not pointer:
                raise LmforgeError(f"llama.cpp returned no logits for batch position {i}")
            rows.append(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)))
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros((0, self.n_vocab))

    def close(self) -> None:
        lib = self.native
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        for name in ("_embed_ctx", "_ctx"):
            if getattr(self, name, None):
                lib.llama_free(getattr(self, name))
                setattr(self, name, None)
        if getattr(self, "_model", None):
            lib.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the bindings may already be gone
            pass


def _fill(batch, entries) -> None:
    """Write ``(token, position, seq id, wants logits)`` entries into a llama_batch (capacity checked by the caller)."""
    for i, (token, pos, seq, flag) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = flag
    batch.n_tokens = len(entries)


def is_gguf(source) -> bool:
    return str(source).lower().endswith(".gguf")
