"""Time and peak memory of ``harness.gap_metrics`` against a naive one-piece implementation.

    python benchmarks/metrics.py                      # the full grid (several minutes on 2 cores)
    python benchmarks/metrics.py --sizes 1000 5000 --dims 64 512

Each row runs in a fresh subprocess. Peak memory is the growth of the process's peak RSS beyond
what it held with the inputs already in memory (``/proc/self/clear_refs`` resets the peak; Linux).
``gap_metrics`` runs exact (tiled) up to ``--exact-max`` and with ``max_pairs`` above it. The
naive column computes the three pairwise terms in one piece, as the contrastive-gap paper's code
does (``torch.pdist`` for uniformity, ``torch.cdist`` for cross-uniformity), only where its N x N
matrices fit in ``--naive-max-gb``; "pairwise" is the same three terms in gap_metrics' tiled code.
Targets (2-core CPU): N=20k, d=512 exact < 40 s; N=100k, d=512, max_pairs=1e7 < 60 s; < 2 GB
beyond the inputs everywhere; at N=5k the tiled pairwise terms no slower than naive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure(n: int, d: int, impl: str, max_pairs: int | None, seed: int = 0) -> dict:
    """One measurement, in this process: seconds and peak MB beyond the inputs."""
    import torch

    from harness.metrics import gap as G

    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=g) + 0.3, dim=1)
    y = torch.nn.functional.normalize(torch.randn(n, d, generator=g) - 0.3, dim=1)
    if impl == "gap_metrics":
        G.gap_metrics(x[:64], y[:64])  # warm up sklearn imports and kernels outside the timing

    def naive() -> list[float]:
        off = ~torch.eye(n, dtype=torch.bool)
        return [
            torch.pdist(x).pow(2).mul(-2).exp().mean().log().item(),
            torch.pdist(y).pow(2).mul(-2).exp().mean().log().item(),
            torch.cdist(x, y).pow(2).mul(-2).exp()[off].mean().log().item(),
        ]

    def pairwise() -> list[float]:
        return [G.pairwise_log_mean_exp(x), G.pairwise_log_mean_exp(y), G.pairwise_log_mean_exp(x, y)]

    run = {
        "gap_metrics": lambda: G.gap_metrics(x, y, seed=seed, max_pairs=max_pairs),
        "pairwise": pairwise,
        "naive": naive,
    }[impl]
    base = _rss_mb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mb": max(0.0, _rss_mb("VmHWM") - base)}


def gemm_gflops(seconds: float = 2.0) -> float:
    """Measured float32 matrix-product throughput (2048 x 512 x 2048 tiles), to put the timings in context."""
    import torch

    a, b = torch.randn(2048, 512), torch.randn(512, 2048)
    a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return count * 2 * 2048 * 512 * 2048 / (time.perf_counter() - t0) / 1e9


def _in_subprocess(n: int, d: int, impl: str, max_pairs: int | None) -> dict:
    cmd = [sys.executable, __file__, "--one", str(n), str(d), impl, str(max_pairs or 0)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 20000, 100000])
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--exact-max", type=int, default=20000, help="largest N computed exactly")
    ap.add_argument("--max-pairs", type=int, default=10_000_000, help="max_pairs above --exact-max")
    ap.add_argument("--naive-max-gb", type=float, default=3.0, help="skip naive where N x N float32 exceeds this")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        n, d, impl, mp = args.one
        print(json.dumps(measure(int(n), int(d), impl, int(mp) or None)))
        return

    import torch
    from tabulate import tabulate

    gflops_before = gemm_gflops()
    rows = []
    for n in args.sizes:
        for d in args.dims:
            exact = n <= args.exact_max
            mp = None if exact else args.max_pairs
            full = _in_subprocess(n, d, "gap_metrics", mp)
            row = {
                "N": n, "d": d, "pairwise terms": "exact" if exact else f"max_pairs={mp:.0e}",
                "gap_metrics s": round(full["seconds"], 2), "gap_metrics peak MB": round(full["peak_mb"]),
                "tiled pairwise s": "", "naive pairwise s": "", "naive peak MB": "",
            }
            if exact:
                row["tiled pairwise s"] = round(_in_subprocess(n, d, "pairwise", None)["seconds"], 2)
            if 3 * n * n * 4 / 1e9 <= args.naive_max_gb:
                naive = _in_subprocess(n, d, "naive", None)
                row["naive pairwise s"], row["naive peak MB"] = round(naive["seconds"], 2), round(naive["peak_mb"])
            else:
                row["naive pairwise s"] = row["naive peak MB"] = "does not fit"
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"gap_metrics benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; matrix products "
          f"{gflops_before:.0f} GFLOP/s before, {gemm_gflops():.0f} after; load average {os.getloadavg()[0]:.1f}")
    print(tabulate(rows, headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()
