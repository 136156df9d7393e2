"""Two ranks (gloo, CPU): each rank's loss on its shard equals the loss on the whole batch.

The losses gather the features with ``harness.gather_features`` (the local shard keeps its
gradient), so each rank computes the global-batch loss, and the gradient of its local rows is the
whole batch's gradient of those rows.

The losses with state (contract v3) run two steps: every rank updates the same state as one
process would, from the gathered features and the gathered extras (``index``...).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import harness
from objectives_helpers import NAMES, V3_NAMES, build_v3, inputs_for, total, v3_inputs

WORKER = Path(__file__).with_name("objectives_distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo")
def test_two_ranks_compute_the_global_batch_loss(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), "2", str(outs[r])], env=env) for r in range(2)]
    for p in procs:
        assert p.wait(timeout=240) == 0
    ranks = [json.loads(o.read_text()) for o in outs]
    for name in NAMES:
        x, y, extras = inputs_for(name, 8, 6, seed=21)
        x.requires_grad_(True)
        y.requires_grad_(True)
        value = total(harness.create_loss(name)(x, y, **extras))
        if value.requires_grad:
            value.backward()
        for r, got in enumerate(ranks):
            assert abs(got[name]["value"] - float(value.detach())) < 1e-10 * max(1.0, abs(float(value.detach()))), (name, r)
            if name in ("vicreg", "barlow_twins"):
                continue  # computed on the raw extras, which the trainer gathers
            rows = slice(4 * r, 4 * (r + 1))
            torch.testing.assert_close(torch.tensor(got[name]["grad_x"], dtype=torch.float64), x.grad[rows])
            torch.testing.assert_close(torch.tensor(got[name]["grad_y"], dtype=torch.float64), y.grad[rows])
    for name in V3_NAMES:  # every rank: the global batch's loss, and the same state as one process
        loss = build_v3(name, 17)
        for step in range(2):
            x, y, extras = v3_inputs(name, 8, 6, seed=21 + step, dataset_size=17)
            x.requires_grad_(True)
            y.requires_grad_(True)
            value = total(loss(x, y, **extras))
            value.backward()
            for r, got in enumerate(ranks):
                mine = got[name]["steps"][step]
                assert abs(mine["value"] - float(value.detach())) < 1e-10 * max(1.0, abs(float(value.detach()))), (name, step, r)
                rows = slice(4 * r, 4 * (r + 1))
                torch.testing.assert_close(torch.tensor(mine["grad_x"], dtype=torch.float64), x.grad[rows])
                torch.testing.assert_close(torch.tensor(mine["grad_y"], dtype=torch.float64), y.grad[rows])
        for r, got in enumerate(ranks):
            for key, value in loss.state_dict().items():
                torch.testing.assert_close(torch.tensor(got[name]["state"][key], dtype=torch.float64), value.double().flatten(),
                                           rtol=1e-12, atol=1e-15, msg=f"{name}: {key} on rank {r}")
