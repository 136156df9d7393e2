"""Runs per hour of the default suite: one job at a time on 2 threads against 2 jobs at once on 1 each.

    .venv/bin/python benchmarks/throughput.py                         # suites/gap.yaml as shipped (hours)
    .venv/bin/python benchmarks/throughput.py --quick                  # 4 steps, 2 objectives x 2 seeds, small sets
    .venv/bin/python benchmarks/throughput.py --steps 60 --rounds 2 --conditions idle busy

Each mode runs ``harness run SUITE --out DIR --jobs N`` on a temporary copy of the suite whose
``resources.cpus_per_job`` (and, with the reduction flags, steps, objectives, seeds and set sizes)
are changed:

- ``old``: ``--jobs 1`` with ``cpus_per_job: 2`` (one job after another, each on 2 threads);
- ``new``: ``--jobs 2`` with ``cpus_per_job: 1`` (the local executor's pool, 2 jobs at once).

The modes take turns round by round (old first in odd rounds, new first in even ones), each run
into a fresh output folder (so each pays the reference rows once, from a cold cache). A run's time
is the wall clock of the whole command, start-up included; runs per hour = jobs / that time x 3600.
Under ``busy`` two ``python -c "while True: pass"`` processes hold both cores for the whole
condition (they are started here and killed at its end): a shared machine. The table gives each
mode's median time, its runs per hour and new / old.

The job's threads change its floating-point order (``harness.threads``), so the two modes do not
store the same numbers; this compares only their throughput.

``--step`` times one training step instead: the suite's ``clip`` job (its encoder, world, batch
and optimizer; ``--step-steps`` steps, default 40) through ``harness.training.train`` on 1 thread,
in a fresh process per variant, the variants taking turns round by round. Per variant: the median
wall and process-CPU time of a step (the first 2 left out), from the trainer's progress callback:

- ``before``: each caption tokenized by open_clip every time, clip's two cross-entropies;
- ``tokens``: each distinct caption tokenized once (the encoder's default);
- ``tokens+fused``: and clip's fused backward (the loss's default);
- ``+compact``: and ``compact_vocabulary(512)`` (off by default: not bit-identical under clipping).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODES = {"old": {"jobs": 1, "cpus_per_job": 2}, "new": {"jobs": 2, "cpus_per_job": 1}}
QUICK = {"steps": 4, "objectives": ["clip", "siglip"], "seeds": [0, 1], "train_size": 512, "eval_size": 128}


def suite_copy(source: Path, out: Path, mode: str, steps: int | None, objectives: list[str] | None,
               seeds: list[int] | None, train_size: int | None, eval_size: int | None) -> Path:
    """The suite with ``mode``'s ``cpus_per_job`` and the reductions asked for, written under ``out``."""
    suite = yaml.safe_load(source.read_text())
    suite["name"] = f"{suite['name']}-throughput-{mode}"
    suite["resources"] = {**(suite.get("resources") or {}), "cpus_per_job": MODES[mode]["cpus_per_job"]}
    if steps is not None:
        suite["train"]["steps"] = steps
        suite["train"]["warmup"] = min(int(suite["train"].get("warmup", 0)), steps)
        suite["train"]["log_every"] = min(int(suite["train"].get("log_every", 10)), steps)
        for enc in suite.get("encoders", []):  # an encoder's own budget (gap's ViT) is reduced too
            if isinstance(enc, dict) and isinstance(enc.get("train"), dict) and "steps" in enc["train"]:
                enc["train"]["steps"] = steps
    if objectives:
        def label(o):
            return o if isinstance(o, str) else (o.get("label") or o["name"])
        suite["objectives"] = [o for o in suite["objectives"] if label(o) in objectives]
    if seeds is not None and "replicates" in suite:  # a replicated suite: its first len(seeds) replicates
        suite["replicates"] = len(seeds)
        for enc in suite.get("encoders", []):
            if isinstance(enc, dict) and enc.get("replicates"):
                enc["replicates"] = min(enc["replicates"], len(seeds))
    elif seeds is not None:
        suite["seeds"] = seeds
    for dataset in suite.get("datasets", []):
        params = dataset.setdefault("params", {}) if isinstance(dataset, dict) else None
        if params is not None and train_size is not None:
            params["train_size"] = train_size
        if params is not None and eval_size is not None:
            params["eval_size"] = eval_size
    path = out / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def count_jobs(suite: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "harness", "validate", str(suite)], cwd=ROOT, capture_output=True,
                         text=True)
    for line in (out.stdout + out.stderr).splitlines():
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if words[i + 1].startswith("job") and word.isdigit():
                return int(word)
    raise SystemExit(f"cannot count the jobs of {suite}: {out.stdout}{out.stderr}")


def run_once(suite: Path, mode: str, out: Path, log) -> tuple[float, bool]:
    """(wall seconds, every job ok) of one ``harness run`` of ``suite`` into the fresh folder ``out``."""
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--out", str(out), "--jobs", str(MODES[mode]["jobs"])]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    return seconds, done.returncode == 0


def start_busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that spin on a core each: the other load of a shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:  # only the processes started here, each by its own id
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def measure(suites: dict[str, Path], jobs: int, rounds: int, work: Path, condition: str, log) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {mode: [] for mode in suites}
    for r in range(rounds):
        order = list(suites) if r % 2 == 0 else list(reversed(suites))
        for mode in order:
            seconds, ok = run_once(suites[mode], mode, work / f"{condition}-{mode}-{r}", log)
            if not ok:
                raise SystemExit(f"{condition} {mode} round {r + 1}: harness run failed; see {log.name}")
            times[mode].append(seconds)
            print(f"  {condition} {mode} round {r + 1}: {jobs} jobs in {seconds:.1f} s "
                  f"({jobs / seconds * 3600:.0f} runs/hour)", file=sys.stderr, flush=True)
    return times


STEP_VARIANTS = ("before", "tokens", "tokens+fused", "+compact")


def step_child(variant: str, suite_path: str, steps: int) -> int:
    """One variant's step times, printed as JSON: ``{"wall_ms": .., "cpu_ms": .., "steps": n}``."""
    import json

    sys.path.insert(0, str(ROOT))  # this checkout's harness, whichever an installed one is
    import torch

    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import harness
    import harness.builtin.encoders.open_clip_encoder as oce
    import harness.builtin.losses.clip as clip
    from harness.config import TrainConfig
    from harness.training import train

    if variant == "before":
        oce.cacheable = lambda tokenizer: False
    if variant == "before" or variant == "tokens":
        clip.fused_clip_contrastive = clip.clip_contrastive
    suite = yaml.safe_load(Path(suite_path).read_text())
    enc_spec, data_spec = suite["encoders"][0], suite["datasets"][0]
    torch.manual_seed(0)
    encoder = harness.create_encoder(enc_spec["name"], **enc_spec.get("params", {}))
    if variant == "+compact":
        encoder.compact_vocabulary(512)
    dataset = harness.create_dataset(data_spec["name"], **data_spec.get("params", {}))
    cfg = TrainConfig.model_validate({**suite["train"], "steps": steps, "device": "cpu"})
    marks = [(time.perf_counter(), time.process_time())]
    train(encoder, harness.create_loss("clip"), dataset.train_pairs(), cfg, 0, torch.device("cpu"),
          progress=lambda state: marks.append((time.perf_counter(), time.process_time())), loss_name="clip")
    walls = [b[0] - a[0] for a, b in zip(marks, marks[1:])][2:]
    cpus = [b[1] - a[1] for a, b in zip(marks, marks[1:])][2:]
    print(json.dumps({"wall_ms": statistics.median(walls) * 1e3, "cpu_ms": statistics.median(cpus) * 1e3,
                      "steps": len(walls)}))
    return 0


def step_main(suite: str, steps: int, rounds: int) -> int:
    import json

    from tabulate import tabulate

    got: dict[str, list[dict]] = {v: [] for v in STEP_VARIANTS}
    for r in range(rounds):
        shift = r % len(STEP_VARIANTS)
        for variant in STEP_VARIANTS[shift:] + STEP_VARIANTS[:shift]:
            out = subprocess.run([sys.executable, __file__, "--step-child", variant, "--suite", suite,
                                  "--step-steps", str(steps)], cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"--step {variant}: {out.stderr[-2000:]}")
            got[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  round {r + 1} {variant}: {got[variant][-1]}", file=sys.stderr, flush=True)
    base = statistics.median(x["cpu_ms"] for x in got["before"])
    rows = [[v, len(got[v]), got[v][0]["steps"], f"{statistics.median(x['wall_ms'] for x in got[v]):.1f}",
             f"{statistics.median(x['cpu_ms'] for x in got[v]):.1f}",
             f"{statistics.median(x['cpu_ms'] for x in got[v]) / base:.3f}"] for v in STEP_VARIANTS]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nclip step of {Path(suite).name} on 1 thread (median per run, median over runs; load average {load:.2f})\n")
    print(tabulate(rows, headers=["variant", "runs", "steps timed", "wall ms/step", "CPU ms/step", "CPU x before"],
                   tablefmt="github"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(ROOT / "suites" / "gap.yaml"))
    parser.add_argument("--quick", action="store_true", help=f"the reductions {QUICK} (flags given win)")
    parser.add_argument("--steps", type=int, default=None, help="train.steps of every job (default: the suite's)")
    parser.add_argument("--objectives", default=None, help="comma list of objective labels to keep")
    parser.add_argument("--seeds", default=None, help="comma list of seeds")
    parser.add_argument("--train-size", type=int, default=None, help="the datasets' train_size")
    parser.add_argument("--eval-size", type=int, default=None, help="the datasets' eval_size")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each mode per condition")
    parser.add_argument("--conditions", nargs="+", default=["idle", "busy"], choices=["idle", "busy"])
    parser.add_argument("--keep", default=None, help="keep the runs and the log in this folder")
    parser.add_argument("--step", action="store_true", help="time the clip job's training step instead (see above)")
    parser.add_argument("--step-steps", type=int, default=40, help="with --step: steps per run (>= 22)")
    parser.add_argument("--step-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step_child:
        return step_child(args.step_child, args.suite, args.step_steps)
    if args.step:
        return step_main(args.suite, args.step_steps, args.rounds)
    quick = QUICK if args.quick else {}
    steps = args.steps if args.steps is not None else quick.get("steps")
    objectives = args.objectives.split(",") if args.objectives else quick.get("objectives")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else quick.get("seeds")
    train_size = args.train_size if args.train_size is not None else quick.get("train_size")
    eval_size = args.eval_size if args.eval_size is not None else quick.get("eval_size")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    suites = {mode: suite_copy(Path(args.suite), work, mode, steps, objectives, seeds, train_size, eval_size)
              for mode in MODES}
    jobs = count_jobs(suites["old"])
    results: dict[str, dict[str, list[float]]] = {}
    with open(work / "runs.log", "w") as log:
        for condition in args.conditions:
            busy = start_busy(2) if condition == "busy" else []
            try:
                results[condition] = measure(suites, jobs, args.rounds, work, condition, log)
            finally:
                stop(busy)

    from tabulate import tabulate

    rows = []
    for condition, times in results.items():
        base = jobs / statistics.median(times["old"]) * 3600
        for mode, values in times.items():
            rate = jobs / statistics.median(values) * 3600
            rows.append([condition, mode, MODES[mode]["jobs"], MODES[mode]["cpus_per_job"], len(values),
                         f"{statistics.median(values):.1f}", f"{rate:.1f}", f"{rate / base:.2f}"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nthroughput of {Path(args.suite).name} ({jobs} jobs per run; steps {steps or 'as shipped'}; "
          f"{os.cpu_count()} CPUs; load average {load:.2f} at the end)\n")
    print(tabulate(rows, headers=["condition", "mode", "--jobs", "cpus_per_job", "runs", "median wall s", "runs/hour",
                                  "x old"], tablefmt="github"))
    print(f"\nruns and log: {work}" if args.keep else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
