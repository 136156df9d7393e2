"""What a mid-run checkpoint costs the gap suite's job, against its step time.

    .venv/bin/python benchmarks/checkpoint.py [--steps 60] [--every 10] [--threads 2]

Runs the ``clip`` job of ``suites/gap.yaml`` (open_clip harness-tiny-cnn, batch 64, the shapes world)
through ``run_job`` for ``--steps`` steps, once without checkpoints and once writing one every
``--every`` steps into a checkpoint directory on the same disk as the runs. Step time is the
training time over the steps (``train_time_s``, which leaves probes and checkpoint writes out);
a checkpoint's cost is ``env.checkpoint_s / env.checkpoints_written`` (torch.save of towers, loss,
AdamW state, RNGs and the log text to a temporary file, fsync, os.replace, fsync of the directory).
The overhead of ``train.checkpoint_every: K`` is that cost over K steps' time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from tabulate import tabulate

from harness.runner import run_job
from harness.suite import expand, load_suite

ROOT = Path(__file__).resolve().parents[1]


def gap_job(steps: int, every: int):
    job = next(j for j in expand(load_suite(ROOT / "suites" / "gap.yaml")) if j.objective.display == "clip")
    return replace(job, train={**job.train, "steps": steps, "checkpoint_every": every}, evaluations=[], save=[])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        for r in range(args.repeats):
            plain = run_job(gap_job(args.steps, 0), Path(tmp) / f"plain{r}", checkpoint_dir=Path(tmp) / f"c{r}a")
            saved = run_job(gap_job(args.steps, args.every), Path(tmp) / f"saved{r}", checkpoint_dir=Path(tmp) / f"c{r}b")
            for res in (plain, saved):
                if res["status"] != "ok":
                    raise SystemExit(res["traceback"])
            step = plain["env"]["train_time_s"] / args.steps
            step_saved = saved["env"]["train_time_s"] / args.steps
            cost = saved["env"]["checkpoint_s"] / max(saved["env"]["checkpoints_written"], 1)
            size = (Path(tmp) / f"c{r}b" / "checkpoint.pt").stat().st_size / 2**20
            rows.append([r, f"{step * 1000:.0f}", f"{step_saved * 1000:.0f}", saved["env"]["checkpoints_written"],
                         f"{cost * 1000:.0f}", f"{size:.1f}",
                         *(f"{100 * cost / (k * step):.2f}%" for k in (10, 50, 100, 200))])
    print(tabulate(rows, headers=["repeat", "ms/step", "ms/step (K run)", "checkpoints", "ms/checkpoint", "MiB",
                                  "K=10", "K=50", "K=100", "K=200"]))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
