import sys

import pytest
import torch

from lmforge.compress import RTN, quantize
from lmforge.compress.storage.pages import release_file_pages
from lmforge.models import load_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise on /proc/self/maps is Linux only")


def _mapping_rss(address: int) -> int:
    """Resident bytes of the memory mapping that holds ``address`` (from /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError("no mapping holds the address")


def test_released_weight_pages_read_back_the_same_values(tiny_folder):
    model, _ = load_model(tiny_folder)[:2]
    weight = model.model.layers[0].mlp.down_proj.weight
    before = weight.detach().clone()
    assert release_file_pages(weight) > 0  # the weights are a copy-on-write map of model.safetensors
    assert torch.equal(weight, before)  # touched again: the kernel re-reads the same bytes from the file


def test_a_weight_written_in_place_is_never_released(tiny_folder):
    model, _ = load_model(tiny_folder)[:2]
    weight = model.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        weight.mul_(0.5)
    changed = weight.detach().clone()
    assert release_file_pages(weight) == 0
    assert torch.equal(weight, changed)


def test_memory_that_is_not_a_file_map_is_left_alone():
    tensor = torch.randn(4096, 64)
    assert release_file_pages(tensor) == 0


def test_quantize_gives_back_the_pages_of_the_weights_it_replaced(tiny_folder):
    model, _ = load_model(tiny_folder)[:2]
    weights = [m.weight for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    for tensor in model.state_dict().values():
        tensor.sum()  # make every page of the file resident, so copying the kept tensors later adds none
    before = _mapping_rss(weights[0].data_ptr())
    quantize(model, RTN(bits=4, group_size=32))
    released = before - _mapping_rss(weights[0].data_ptr())
    whole_pages = sum(w.nbytes for w in weights) - 2 * 4096 * len(weights)
    assert released >= whole_pages
