import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmforge.train import pretrain


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world, port, config, tokenizer, data, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = pretrain(config, tokenizer=tokenizer, data=data, log=None)
        if rank == 0:
            out_path.write_text(json.dumps({"losses": result.losses, "eval": result.final_eval_loss,
                                            "world": result.world_size}))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_follow_one_process_with_the_same_global_batch(tmp_path, tiny_data, tiny_config):
    tokenizer, data = tiny_data
    config = tiny_config(max_steps=6, eval_interval=6)
    single = pretrain(config, tokenizer=tokenizer, data=data, log=None)
    out = tmp_path / "ddp.json"
    mp.start_processes(_worker, args=(2, _free_port(), config, tokenizer, data, out), nprocs=2, start_method="fork")
    ddp = json.loads(out.read_text())
    assert ddp["world"] == 2
    assert ddp["losses"] == pytest.approx(single.losses, abs=1e-5)
    assert ddp["eval"] == pytest.approx(single.final_eval_loss, abs=1e-5)
