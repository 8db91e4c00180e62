"""Give the memory of replaced float weights back to the system while a model is compressed (Linux).

transformers maps a safetensors file into the process copy-on-write. A weight that compression
has replaced (a ``nn.Linear`` swapped for a packed ``QuantLinear``) stays resident until every
tensor of the file is gone, so quantizing layer by layer would end holding the whole float model
plus its quantized copy. ``release_file_pages(tensor)`` drops the pages of one such tensor with
``madvise(MADV_DONTNEED)``, and only when its bytes still equal the file's: if anything reads the
tensor again the kernel re-reads the same bytes from the file, so nothing can be lost.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import sys

import torch

_MADV_DONTNEED = 4


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library the process already runs on (glibc on the Linux systems this targets)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _mapping_of(address: int, size: int) -> tuple[int, int, str] | None:
    """(mapping start, file offset of the start, file path) of the private file mapping holding the range."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[1][3] != "p" or not fields[5].startswith("/"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address and address + size <= end:
                return start, int(fields[2], 16), fields[5].rstrip("\n")
    return None


def release_file_pages(tensor: torch.Tensor) -> int:
    """Drop the whole pages of ``tensor`` that are an unmodified file mapping; returns the bytes released."""
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu" or tensor.nbytes < mmap.PAGESIZE:
        return 0
    address, size = tensor.data_ptr(), tensor.nbytes
    mapping = _mapping_of(address, size)
    if mapping is None:
        return 0
    start, offset, path = mapping
    page = mmap.PAGESIZE
    first, last = -(-address // page) * page, (address + size) // page * page
    if last <= first:
        return 0
    try:
        with open(path, "rb") as handle:
            on_disk = os.pread(handle.fileno(), last - first, offset + first - start)
    except OSError:
        return 0
    if ctypes.string_at(first, last - first) != on_disk:
        return 0  # written since it was mapped: dropping the pages would lose the change
    if _libc().madvise(first, last - first, _MADV_DONTNEED) != 0:
        return 0
    return last - first
