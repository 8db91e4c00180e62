"""What llama.cpp itself does with a GGUF file: run inside the llama-cpp-python venv (``.venv-llama``), never
imported by lmforge. One JSON request on stdin, one JSON answer on stdout:

    {"op": "score", "model": PATH, "windows": [[ids...], ...], "threads": 2, "logits_of": [ids...] | null,
     "extra_buffers": true}   (false: plain CPU weight buffers, no repacking; score and generate take it)
        -> {"window_nll": [...], "logits": [[...], ...] | null}   NLL of tokens 1.. of each window (windows
           protocol: the ids are lmforge's, so both engines score the same tokens)
    {"op": "generate", "model": PATH, "prompt": [ids...], "tokens": N, "threads": 2}
        -> {"ids": [...], "decode_tokens_per_s": x, "seconds": s}  greedy, timed from the first new token
    {"op": "quantize", "source": PATH, "target": PATH, "ftype": "Q4_K_M", "imatrix": PATH | null, "threads": 2}
        -> {"seconds": s}   llama.cpp's own quantizer (llama_model_quantize)
"""

import ctypes
import json
import sys
import time

import numpy as np
import llama_cpp

from llama_cpp_plain import use_plain_cpu_buffers


def load(path, threads, n_ctx=2048, logits_all=False, extra_buffers=True):
    if not extra_buffers:
        use_plain_cpu_buffers()
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                           logits_all=logits_all, verbose=False)


def score(request):
    windows = request["windows"]
    width = max([len(w) for w in windows] + [len(request.get("logits_of") or [])])
    llm = load(request["model"], request.get("threads", 2), n_ctx=max(width, 16), logits_all=True,
               extra_buffers=request.get("extra_buffers", True))
    nlls = []
    for window in windows:
        llm.reset()
        llm.eval(window)
        total = 0.0
        for start in range(0, len(window) - 1, 256):  # float64 in slices: a 2048 x 49152 window is 800 MB in float64
            stop = min(start + 256, len(window) - 1)
            logits = np.asarray(llm.scores[start:stop], dtype=np.float64)
            top = logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
            total += float((log_norm - logits[np.arange(stop - start), window[start + 1 : stop + 1]]).sum())
        nlls.append(total)
    logits = None
    if request.get("logits_of"):
        llm.reset()
        llm.eval(request["logits_of"])
        logits = np.asarray(llm.scores[: len(request["logits_of"])]).tolist()
    return {"window_nll": nlls, "logits": logits}


def generate(request):
    prompt, count = request["prompt"], request["tokens"]
    llm = load(request["model"], request.get("threads", 2), n_ctx=len(prompt) + count + 8,
               extra_buffers=request.get("extra_buffers", True))
    ids, start = [], None
    for token in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if start is None:
            start = time.perf_counter()  # the prompt is processed; time the decode steps only
        ids.append(int(token))
        if len(ids) == count:
            break
    seconds = time.perf_counter() - start
    return {"ids": ids, "seconds": seconds, "decode_tokens_per_s": (len(ids) - 1) / seconds if len(ids) > 1 else None}


def quantize(request):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{request['ftype']}")
    params.nthread = request.get("threads", 2)
    if request.get("imatrix"):
        raise SystemExit("imatrix: not supported by this probe")
    start = time.perf_counter()
    status = llama_cpp.llama_model_quantize(request["source"].encode(), request["target"].encode(), ctypes.byref(params))
    if status != 0:
        raise SystemExit(f"llama_model_quantize failed with status {status}")
    return {"seconds": time.perf_counter() - start}


if __name__ == "__main__":
    request = json.loads(sys.stdin.read())
    answer = {"score": score, "generate": generate, "quantize": quantize}[request["op"]](request)
    print(json.dumps({**answer, "llama_cpp_python": llama_cpp.__version__}))
