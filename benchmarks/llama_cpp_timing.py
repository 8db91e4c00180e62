"""llama-cpp-python's own greedy decode, timed in its venv the way decode.py times lmforge and `generate`.

Used by decode.py and serve_llama_cpp.py: the script runs in the llama venv (``llama_python``) on llama.cpp's
plain CPU buffers (llama_cpp_plain.py) and reports, medians over ``repeats`` after a warm-up, ``t_1`` (prefill
+ first token) and ``t_new`` (all ``new_tokens``) by its own clock, with the tokens it produced.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

SCRIPT = """
import json, statistics, sys, time
sys.path.insert(0, sys.argv[6])
from llama_cpp_plain import use_plain_cpu_buffers
use_plain_cpu_buffers()
from llama_cpp import Llama
path, threads, new_tokens, repeats, ids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=len(ids) + new_tokens + 8, verbose=False)

def run(n):
    llm.reset()
    out, started = [], time.perf_counter()
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == n:
            break
    return time.perf_counter() - started, out

run(4)
firsts = [run(1)[0] for _ in range(repeats)]
fulls = [run(new_tokens) for _ in range(repeats)]
print(json.dumps({"t_1": statistics.median(firsts), "t_new": statistics.median(t for t, _ in fulls), "tokens": fulls[0][1]}))
"""


def time_llama_generate(llama_python: str | Path, gguf: str | Path, threads: int, new_tokens: int, repeats: int,
                        ids: list[int]) -> dict:
    """``{"t_1", "t_new", "tokens"}``, or ``{"error": ...}`` when llama.cpp crashed (a result too, not hidden)."""
    done = subprocess.run([str(llama_python), "-X", "faulthandler", "-c", SCRIPT, str(gguf), str(threads), str(new_tokens),
                           str(repeats), json.dumps(ids), str(Path(__file__).resolve().parent)],
                          capture_output=True, text=True)
    if done.returncode:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])
