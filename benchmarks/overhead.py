"""Time per training step through ``run_job`` vs a bare PyTorch loop (same model, loss, data, batch).

    .venv/bin/python benchmarks/overhead.py [--steps 40] [--batch 128] [--threads 2]

Both paths do the same work per step: draw a batch from the shapes world, preprocess, tokenize,
encode, normalise, loss, backward, AdamW. Target: the harness adds <= 5%. Ray's per-job overhead is
measured by benchmarks/ray_overhead.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

import harness
from harness.runner import run_job, seed_everything
from harness.suite import expand, parse_suite


def suite_dict(steps: int, batch: int, threads: int) -> dict:
    return {
        "name": "overhead",
        "objectives": ["clip"],
        "encoders": [{"name": "open_clip", "params": {"model": "harness-tiny-vit"}}],
        "datasets": [{"name": "shapes", "params": {"train_size": 4096, "eval_size": 64}}],
        "train": {"steps": steps, "batch_size": batch, "lr": 5e-4, "log_every": 10},
        "evaluations": [],
        "resources": {"cpus_per_job": threads},
    }


def bare_loop(steps: int, batch: int, seed: int) -> float:
    """Seconds per step of a plain loop over the same pieces (after one warm-up step)."""
    seed_everything(seed)
    dataset = harness.create_dataset("shapes", train_size=4096, eval_size=64)
    encoder = harness.create_encoder("open_clip", model="harness-tiny-vit")
    loss_fn = harness.create_loss("clip")
    pairs = dataset.train_pairs()
    params = list(encoder.model.parameters()) + list(loss_fn.parameters())
    # the harness's optimizer settings (fused AdamW: one kernel for all params; unfused it costs ~25%
    # more per step here, which would hide the harness's own overhead)
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.1, fused=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        idx = order[(step * batch) % len(pairs) :][:batch]
        images, captions = pairs.get_batch(idx, rng)
        x = encoder.preprocess_images(images, train=True)
        y = encoder.pair_inputs(images, captions, train=True)
        fx = F.normalize(encoder.encode_image(x), dim=-1)
        fy = F.normalize(encoder.encode_pair(y), dim=-1)
        total = sum(loss_fn(fx, fy).values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def harness_loop(steps: int, batch: int, threads: int) -> float:
    """Seconds per step inside run_job, from its log (excludes build and evaluation)."""
    job = expand(parse_suite(suite_dict(steps + 1, batch, threads)))[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_job(job, Path(tmp))
        if result["status"] != "ok":
            raise SystemExit(result["traceback"])
        log = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    # elapsed_s counts from the first step; subtract the first logged window's share of step 1
    first, last = log[0], log[-1]
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for r in range(args.repeats):
        bare = bare_loop(args.steps, args.batch, seed=0)
        through = harness_loop(args.steps, args.batch, args.threads)
        rows.append([r, args.batch, f"{bare * 1000:.1f}", f"{through * 1000:.1f}", f"{100 * (through / bare - 1):+.1f}%"])
    print(tabulate(rows, headers=["repeat", "batch", "bare loop ms/step", "run_job ms/step", "overhead"]))
    print("target: overhead <= 5% (min over repeats counts; other processes on the CPU add noise)")


if __name__ == "__main__":
    main()
