"""GradCache micro-batching and data-parallel workers: peak memory and time per sample.

    .venv/bin/python benchmarks/scale.py                          # batch 256, 1024, 4096; micro 128; 1 and 2 workers
    .venv/bin/python benchmarks/scale.py --batches 1024 --steps 3

Every cell is the harness's own ``harness.training.train`` (CLIP loss, learnable temperature, AdamW,
``harness-tiny-vit`` unless ``--model``) in a fresh process, so peaks do not leak between cells:

- memory: the resident set's peak during training above the process's resident set when training
  starts (model, optimizer and data already built): ``env.peak_rss_above_start_mb`` of a job's
  result. With 2 workers, the larger worker's (each holds a full model and optimizer).
- time: median seconds per step over the timed steps (after ``--warmup`` untimed ones), divided by
  the batch: wall-clock (the slower worker's), and the process CPU seconds (summed over workers),
  which other processes on a shared machine disturb far less. Images are rendered once before training (shapes, 32 px), so data rendering is not
  part of either number; preprocessing and tokenizing are, as in a job.
- ``--threads`` (default: every core) is the job's CPUs: one process uses them all, 2 workers
  half each (``cpus_per_job`` split evenly), but at least one each, talking over gloo on loopback.
  ``--threads 1`` is the load-robust choice on a shared machine (two OpenMP threads of one process
  on a 2-core machine that others also use get descheduled at every parallel region, which slows
  fine-grained work such as small chunks by several times); 2 workers then use 2 CPUs.

Unchunked cells are skipped where their estimated peak (scaled from the largest unchunked batch
measured) exceeds ``--max-gb`` or half of the memory available. The targets of issue 16 at batch
1024: memory <= 0.4 x unchunked, time per sample <= 1.4 x unchunked (one extra forward: ideal 4/3).
Other processes share a CPU: run it when ``uptime`` shows a low load, and say what it was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Pairs:
    """An in-memory pair source: pre-rendered images and one caption each."""

    def __init__(self, images, captions):
        self.images, self.captions = images, captions

    def __len__(self):
        return len(self.captions)

    def get_batch(self, indices, rng):
        return self.images[indices], [self.captions[i] for i in indices]


def _pairs(n: int, image_size: int = 32) -> Pairs:
    import numpy as np

    import harness

    data = harness.create_dataset("shapes", train_size=n, eval_size=16, seed=0, image_size=image_size).train_pairs()
    images, captions = data.get_batch(np.arange(n), np.random.default_rng(0))
    return Pairs(np.ascontiguousarray(images), list(captions))


def _train(args, out: Path | None) -> dict:
    """One cell in this process (or this worker): train and return the timing and memory record."""
    import torch

    import harness
    from harness.config import TrainConfig
    from harness.runner import seed_everything
    from harness.distributed import world
    from harness.training import train

    rank, workers = world()
    torch.set_num_threads(max(1, args.threads // workers))
    pairs = _pairs(args.batch, args.image_size)
    seed_everything(0)
    encoder = harness.create_encoder("open_clip", model=args.model)
    loss = harness.create_loss("clip")
    stamps: list[float] = []
    cfg = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch, lr=1e-4, warmup=1,
                      micro_batch=args.micro or None, log_every=10**6)
    device = torch.device(args.device if args.device != "cuda" or workers == 1 else f"cuda:{rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        cfg = cfg.model_copy(update={"precision": args.precision})

    cpu: list[float] = []

    def stamp(state):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    stats = train(encoder, loss, pairs, cfg, 0, device, progress=stamp)
    steps = [b - a for a, b in zip(stamps[args.warmup - 1 :], stamps[args.warmup:])] if args.warmup else []
    cpu_steps = sorted(b - a for a, b in zip(cpu[args.warmup - 1 :], cpu[args.warmup:])) if args.warmup else []
    steps.sort()
    env = stats["env"]
    record = {"batch": args.batch, "micro": args.micro, "workers": workers, "threads": torch.get_num_threads(),
              "step_s": steps[len(steps) // 2] if steps else None, "step_s_min": steps[0] if steps else None,
              "cpu_s": cpu_steps[len(cpu_steps) // 2] if cpu_steps else None,
              "peak_above_start_mb": env.get("cuda_peak_above_start_mb" if device.type == "cuda" else "peak_rss_above_start_mb"),
              "peak_rss_mb": env.get("peak_rss_mb"), "cuda_peak_mb": env.get("cuda_peak_mb"), "precision": stats.get("precision"),
              "final_loss": stats.get("final_loss")}
    if out is not None:
        (out / f"rank{rank}.json").write_text(json.dumps(record))
    return record


def _worker(rank: int, args, port: int, out: Path) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from harness.executors.ray_train import backend_for

    dist.init_process_group(backend_for(1 if args.device == "cuda" else 0), rank=rank, world_size=args.workers)
    try:
        _train(args, out)
    finally:
        dist.destroy_process_group()


def one(args) -> dict:
    """A cell, in this (fresh) process: one process, or ``--workers`` processes over gloo."""
    if args.workers == 1:
        return _train(args, None)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(args, port, Path(tmp)), nprocs=args.workers, start_method="spawn")
        records = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(args.workers)]
    record = records[0]
    record["peak_above_start_mb"] = max(r["peak_above_start_mb"] or 0 for r in records)
    record["step_s"] = max(r["step_s"] for r in records)
    record["cpu_s"] = sum(r["cpu_s"] for r in records)  # CPU seconds of the whole job per step
    return record


def cell(batch: int, micro: int, workers: int, args) -> dict | None:
    cmd = [sys.executable, __file__, "--one", "--batch", str(batch), "--micro", str(micro), "--workers", str(workers),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads), "--model", args.model,
           "--device", args.device, "--precision", args.precision, "--image-size", str(args.image_size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(f"cell batch={batch} micro={micro} workers={workers} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def available_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="256,1024,4096")
    p.add_argument("--micro-batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="also run this many workers (1: skip)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per cell")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--model", default="harness-tiny-vit")
    p.add_argument("--max-gb", type=float, default=12.0, help="skip unchunked cells estimated above this")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: memory is the CUDA allocator's peak")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast on cuda")
    p.add_argument("--image-size", type=int, default=32, help="side of the rendered shapes images")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--micro", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args)))
        return

    batches = [int(b) for b in args.batches.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = "CPU" if args.device == "cpu" else f"CUDA {args.precision}"
    print(f"# scale: {args.model}, {where}, {args.threads} thread(s) per job, {args.steps} timed steps after "
          f"{args.warmup} warm-up; load average at start {load:.2f}\n")
    rows, per_mb = [], None
    for batch in batches:
        plain = None
        budget = args.max_gb * 1024 if args.device == "cuda" else min(args.max_gb, available_gb() / 2) * 1024
        if per_mb is None or per_mb * batch <= budget:
            plain = cell(batch, 0, 1, args)
            if plain:
                per_mb = plain["peak_above_start_mb"] / batch
        chunked = cell(batch, args.micro_batch, 1, args) if args.micro_batch < batch else None
        cells = [("unchunked", 1, plain), (f"micro_batch {args.micro_batch}", 1, chunked)]
        if args.workers > 1 and batch <= 1024:
            cells.append((f"{args.workers} workers", args.workers, cell(batch, 0, args.workers, args)))
            cells.append((f"{args.workers} workers, micro_batch {args.micro_batch}", args.workers,
                          cell(batch, args.micro_batch, args.workers, args)))
        for label, workers, rec in cells:
            if rec is None and label == "unchunked":
                est = f"skipped (est. {per_mb * batch / 1024:.1f} GB)" if per_mb else "failed"
                rows.append([batch, label, est, "", "", "", "", ""])
                continue
            if rec is None:
                continue
            mem, sps, cps = rec["peak_above_start_mb"], rec["step_s"] / batch * 1e3, rec["cpu_s"] / batch * 1e3
            mem_x = f"{mem / plain['peak_above_start_mb']:.2f}x" if plain else ""
            time_x = f"{rec['step_s'] / plain['step_s']:.2f}x" if plain else ""
            cpu_x = f"{rec['cpu_s'] / plain['cpu_s']:.2f}x" if plain else ""
            rows.append([batch, label, f"{mem:.0f}", mem_x, f"{sps:.3f}", time_x, f"{cps:.3f}", cpu_x])
    print("| batch | configuration | peak memory above start (MB) | vs unchunked | wall ms per sample | vs unchunked "
          "| CPU ms per sample | vs unchunked |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    per_worker = max(1, args.threads // max(args.workers, 1))
    print(f"\nload average at end {load_end:.2f}. One process: {args.threads} thread(s); each of {args.workers} workers: "
          f"{per_worker} thread(s) ({per_worker * args.workers} CPU(s) for the job). Workers: the larger worker's peak; "
          f"wall time is the slower worker's median step / global batch, CPU time the workers' sum.")


if __name__ == "__main__":
    main()
