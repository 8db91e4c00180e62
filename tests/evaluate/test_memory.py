import sys

import pytest
import torch

from lmforge.evaluate import peak_rss_bytes, reset_peak_rss, rss_bytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_reset_peak_rss_starts_a_new_peak():
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del big
    high = peak_rss_bytes()
    assert high >= rss_bytes()
    assert reset_peak_rss()
    after = peak_rss_bytes()
    assert after < high - 32 * 2**20  # the 64 MiB buffer is gone from the new peak
    # above glibc's largest mmap threshold (32 MiB), so it takes fresh pages, never heap memory already resident
    fresh = torch.ones(48 * 2**20 // 4)
    assert peak_rss_bytes() >= after + 32 * 2**20  # and the new peak follows new allocations
    del fresh
