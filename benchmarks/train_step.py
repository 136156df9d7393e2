"""Training-step time of the shipped encoder configs: forward + backward + AdamW with the CLIP loss.

    .venv/bin/python benchmarks/train_step.py                       # every shipped config, batch 64/128/256
    .venv/bin/python benchmarks/train_step.py --configs harness-tiny-vit --batches 128 --steps 10

One step = encode a preprocessed image batch and its tokenized captions, L2-normalise, open_clip's
``ClipLoss`` (logit scale 1/0.07), ``backward``, ``AdamW.step``. Inputs are prepared once, outside
the timing, so the number is the model's cost alone; ``benchmarks/data.py`` compares data
rendering against it through ``step_time(config, batch)``. Each cell is the *minimum* over the
timed steps (other processes share the CPU; the minimum is the least disturbed measurement), next
to the median and the process CPU seconds per step (with ``--threads 1``, a load-robust number).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_BATCHES = (64, 128, 256)


def make_optimizer(params, optimizer: str = "fused", lr: float = 5e-4) -> torch.optim.Optimizer:
    """AdamW, ``fused`` (one kernel for all params; far faster on CPU) or ``foreach``."""
    params = [p for p in params if p.requires_grad]
    if optimizer == "fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.1, fused=True)
    if optimizer == "foreach":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.1, foreach=True)
    raise ValueError(f"optimizer: expected 'fused' or 'foreach', got {optimizer!r}")


def step_times(config: str = "harness-tiny-vit", batch: int = 128, steps: int = 5, warmup: int = 1,
               optimizer: str = "fused", device: str = "cpu") -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of each timed training step (after ``warmup`` untimed
    ones) for one config and batch. CPU seconds with one thread are the load-robust number: other
    processes on the machine stretch wall time but hardly this process's CPU time."""
    import open_clip

    import harness

    torch.manual_seed(0)
    enc = harness.create_encoder("open_clip", model=config)
    enc.model.to(device).train()
    h, w = enc.image_size
    images = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    captions = [f"a small red circle number {i} on the left" for i in range(batch)]
    x = enc.preprocess_images(images, train=True)
    tokens = enc.pair_inputs(images, captions, train=True)
    loss_fn = open_clip.loss.ClipLoss()
    scale = torch.tensor(1 / 0.07, device=x.device)
    opt = make_optimizer(enc.model.parameters(), optimizer)
    wall, cpu = [], []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        img = F.normalize(enc.encode_image(x), dim=-1)
        txt = F.normalize(enc.encode_pair(tokens), dim=-1)
        loss = loss_fn(img, txt, logit_scale=scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


def step_time(config: str = "harness-tiny-vit", batch: int = 128, steps: int = 5, optimizer: str = "fused") -> float:
    """Seconds per training step of ``config`` at ``batch`` on this CPU (minimum over ``steps``)."""
    return min(step_times(config, batch, steps=steps, optimizer=optimizer)[0])


def param_count(config: str) -> int:
    import harness

    enc = harness.create_encoder("open_clip", model=config)
    return sum(p.numel() for p in enc.model.parameters())


def main(argv: list[str] | None = None) -> None:
    from tabulate import tabulate

    from harness.builtin.encoders.configs import shipped_configs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(shipped_configs()))
    parser.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per cell (after 1 warm-up)")
    parser.add_argument("--optimizer", nargs="+", default=["fused"], choices=["fused", "foreach"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for config in args.configs:
        n = param_count(config)
        for opt in args.optimizer:
            for batch in args.batches:
                wall, cpu = step_times(config, batch, steps=args.steps, optimizer=opt)
                best = min(wall)
                rows.append([config, f"{n / 1e6:.2f}", opt, batch, f"{best:.3f}", f"{np.median(wall):.3f}",
                             f"{min(cpu):.3f}", f"{batch / best:.0f}"])
                print(f"  {config} {opt} batch {batch}: {best:.3f} s", flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, CPU; min and median of {args.steps} steps\n")
    print(tabulate(rows, headers=["config", "params (M)", "AdamW", "batch", "step s (min)", "step s (median)",
                                 "CPU s/step (min)", "samples/s"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
