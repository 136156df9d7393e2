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

from objectives_helpers import NAMES, V3_NAMES, build_v3, inputs_for, total, v3_inputs  # noqa: E402

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
    for name in V3_NAMES:  # two consecutive steps: the state each rank updates from the gathered batch
        loss = build_v3(name, 17)
        steps = []
        for step in range(2):
            x, y, extras = v3_inputs(name, n, 6, seed=21 + step, dataset_size=17)  # the extras gathered, whole
            xs, ys = x[rows].clone().requires_grad_(True), y[rows].clone().requires_grad_(True)
            value = total(loss(xs, ys, **extras))
            value.backward()
            steps.append({"value": float(value.detach()), "grad_x": xs.grad.tolist(), "grad_y": ys.grad.tolist()})
        out[name] = {"steps": steps, "state": {k: v.double().flatten().tolist() for k, v in loss.state_dict().items()}}
    dist.destroy_process_group()
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
