"""llama-cpp-python on llama.cpp's plain CPU weight buffers; imported inside the llama venv by llama_cpp_timing.py, serve.py
and llama_cpp_probe.py.

llama-cpp-python 0.3.36 as built here segfaults in llama_decode on this CPU (AMX + AVX-512) while it uses
llama.cpp's "extra buffer types" (weights repacked for the AMX / AVX-512 kernels). With them off (llama.cpp's
`--no-repack`, `use_extra_bufts=False`) it runs and computes the same products on the plain CPU kernels; rows
measured this way say so. The binding has no argument for it: ``Llama()`` builds its model params from
``llama_model_default_params``, so that function is wrapped.
"""

import llama_cpp
import llama_cpp.llama_cpp as native


def use_plain_cpu_buffers() -> None:
    default = native.llama_model_default_params
    if getattr(default, "plain_cpu_buffers", False):
        return

    def plain():
        params = default()
        params.use_extra_bufts = False
        return params

    plain.plain_cpu_buffers = True
    native.llama_model_default_params = llama_cpp.llama_model_default_params = plain
