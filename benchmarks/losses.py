"""Forward + backward time per step of every built-in loss, as a ratio to ``clip``.

    .venv/bin/python benchmarks/losses.py                       # N in {256, 1024, 4096}, d in {64, 512}
    .venv/bin/python benchmarks/losses.py --sizes 256,1024 --dims 64 --repeats 3 --device cpu

Targets (issue 3), at the same N and d: losses built on the cross-modal similarity matrix only
(siglip, dcl, cyclip) within 1.5x of clip; those adding in-modal Gram matrices (cua, cuaxu,
align_uniform) within 3x. Prints one Markdown table (median of ``--repeats`` timed steps after
``--warmup`` untimed ones); on CUDA also the peak memory of a step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import harness

LOSSES = ["clip", "siglip", "dcl", "cyclip", "cua", "cuaxu", "align_uniform"]
TARGET = {"clip": 1.0, "siglip": 1.5, "dcl": 1.5, "cyclip": 1.5, "cua": 3.0, "cuaxu": 3.0, "align_uniform": 3.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(name: str, n: int, d: int, device: torch.device, repeats: int, warmup: int) -> tuple[float, float | None]:
    """Median seconds of one forward + backward of loss ``name`` on (n, d) embeddings; peak MiB on CUDA."""
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device).requires_grad_(True)
    y = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device).requires_grad_(True)
    loss = harness.create_loss(name).to(device)
    times = []
    for i in range(warmup + repeats):
        x.grad = y.grad = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        sum(loss(x, y).values()).backward()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return statistics.median(times), peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096", help="comma list of batch sizes N")
    parser.add_argument("--dims", default="64,512", help="comma list of embedding dims d")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma list of losses (clip is always timed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["clip"] + [n for n in args.losses.split(",") if n and n != "clip"]
    from tabulate import tabulate

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for d in (int(s) for s in args.dims.split(",")):
            base = None
            for name in names:
                seconds, peak = time_step(name, n, d, device, args.repeats, args.warmup)
                base = seconds if name == "clip" else base
                ratio = seconds / base
                target = TARGET.get(name)
                verdict = "" if target is None or name == "clip" else ("ok" if ratio <= target else "over")
                row = [n, d, name, f"{seconds * 1e3:.2f}", f"{ratio:.2f}", f"{target:g}x" if target else "", verdict]
                if device.type == "cuda":
                    row.append(f"{peak:.0f}")
                rows.append(row)
                print(f"  N={n} d={d} {name}: {seconds * 1e3:.2f} ms ({ratio:.2f}x)", file=sys.stderr, flush=True)
    headers = ["N", "d", "loss", "fwd+bwd ms", "x clip", "target", ""] + (["peak MiB"] if device.type == "cuda" else [])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nlosses: forward+backward per step, median of {args.repeats} ({where}, torch {torch.__version__})\n")
    print(tabulate(rows, headers=headers, tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
