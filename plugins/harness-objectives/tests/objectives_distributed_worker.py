"""One rank of test_objectives_distributed.py: each loss on this rank's shard of the batch (gloo).

Not a test module: test_objectives_distributed.py runs it as
``python objectives_distributed_worker.py RANK WORLD OUT`` with MASTER_ADDR/MASTER_PORT set. The
batch-shaped extras are handed over whole, as the trainer gathers them before the loss sees them.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from objectives_helpers import NAMES, inputs_for, total  # noqa: E402

import harness  # noqa: E402


def main() -> None:
    rank, world, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = 4 * world
    rows = slice(4 * rank, 4 * (rank + 1))
    out = {}
    for name in NAMES:
        x, y, extras = inputs_for(name, n, 6, seed=21)
        xs, ys = x[rows].clone().requires_grad_(True), y[rows].clone().requires_grad_(True)
        value = total(harness.create_loss(name)(xs, ys, **extras))
        if value.requires_grad:  # vicreg/barlow_twins: the raw extras here carry no gradient
            value.backward()
        out[name] = {
            "value": float(value.detach()),
            "grad_x": xs.grad.tolist() if xs.grad is not None else None,
            "grad_y": ys.grad.tolist() if ys.grad is not None else None,
        }
    dist.destroy_process_group()
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
