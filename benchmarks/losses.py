"""Forward + backward time and memory per step of every loss, as a ratio to ``clip``.

    .venv/bin/python benchmarks/losses.py                       # N in {256, 1024, 4096}, d in {64, 512}
    .venv/bin/python benchmarks/losses.py --sizes 256,1024,4096 --dims 512 --threads 1   # a shared CPU
    .venv/bin/python benchmarks/losses.py --sizes 256,1024 --dims 64 --repeats 3 --device cpu

Covers the built-in losses and, when the ``harness-objectives`` distribution is installed
(``pip install -e plugins/harness-objectives``), its eight; without it the built-in rows are printed
and a note says what is left out. Losses that declare extras get them synthesised: ``image_raw`` /
``text_raw`` are unnormalised copies of the embeddings, ``step`` / ``total_steps`` the timed step's
index and the run's length, ``text_negatives`` (N, K, d) unit vectors with K = 4; every tensor
extra requires grad, as in training.

Targets (issues 3 and 13), at the same N and d, by what a loss computes beyond clip's one N x N
similarity matrix:

- ``similarity`` (within 1.5x of clip): built on the cross-modal similarity matrix only: siglip,
  dcl, cyclip; hn_nce, ifm, clip_cosine_temperature;
- ``extra NxN`` (within 3x): more N x N matrices: cua, cuaxu, align_uniform (in-modal Gram
  matrices); dhel (two in-modal Gram matrices); cloob (two Gram matrices, four Hopfield retrievals,
  two InfoLOOB matrices); negclip (an N x N K matrix of hard-negative logits);
- ``extra dxd`` (within 3x): d x d matrices instead: vicreg, barlow_twins.

Next to each measured ratio stands what the loss's matrix products predict: ``NNd`` counts the
matrix-product work of one forward + backward (``torch.utils.flop_counter``: every mm, bmm and
addmm, d x d products of vicreg and barlow_twins included) in units of one N x N x d product (clip:
3, one for the logits and two for their gradients), ``expected`` is that count as a ratio to clip's
(cloob 8.3x, negclip with K = 4 5x) and ``measured / expected`` the measured ratio divided by it:
about 1 where products dominate, above 1 where element-wise work (exp, log-sum-exp, distances)
does. A target above the expected ratio cannot be met by a faster implementation of the same
products; one below it is met only when the products are not the cost.

Prints one Markdown table: the minimum (``--stat median``: the median) of ``--repeats`` timed steps
after ``--warmup`` untimed ones, the losses taking turns step by step so that other load on a
shared machine falls on all alike; on CPU the clock is the process's CPU time (``--clock wall`` for
elapsed time), which other processes do not inflate as long as the loss runs on one thread
(``--threads 1``: with more, waiting threads spin and count); and the peak memory of one step: on CUDA ``max_memory_allocated`` (inputs included); on a
Linux CPU the rise of the peak resident memory (VmHWM, reset through /proc/self/clear_refs) over one
step, measured after the timings in a fresh process whose glibc mmap threshold is pinned at 64 KiB
before any allocation, so that tensors enter and leave the resident set as they are made and freed.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's harness, not an installed one
import harness  # noqa: E402

BUILTIN = ["clip", "siglip", "dcl", "cyclip", "cua", "cuaxu", "align_uniform"]
PLUGIN = ["cloob", "dhel", "hn_nce", "ifm", "vicreg", "barlow_twins", "clip_cosine_temperature", "negclip"]
PLUGIN_DIST = "harness-objectives"
CLASS = {
    "clip": "baseline",
    "siglip": "similarity", "dcl": "similarity", "cyclip": "similarity",
    "hn_nce": "similarity", "ifm": "similarity", "clip_cosine_temperature": "similarity",
    "cua": "extra NxN", "cuaxu": "extra NxN", "align_uniform": "extra NxN",
    "dhel": "extra NxN", "cloob": "extra NxN", "negclip": "extra NxN",
    "vicreg": "extra dxd", "barlow_twins": "extra dxd",
}
TARGET = {"baseline": 1.0, "similarity": 1.5, "extra NxN": 3.0, "extra dxd": 3.0}
K_NEGATIVES = 4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(loss: torch.nn.Module, n: int, d: int, device: torch.device, total_steps: int):
    """(x, y, extras) for ``loss``: unit-norm (n, d) pairs and the extras it declares, grad leaves."""
    g = torch.Generator().manual_seed(0)
    raw_x, raw_y = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    leaf = lambda t: t.to(device).requires_grad_(True)  # noqa: E731
    x, y = leaf(F.normalize(raw_x, dim=1)), leaf(F.normalize(raw_y, dim=1))
    extras = {}
    for name in getattr(loss, "extras", ()) or ():
        if name == "image_raw":
            extras[name] = leaf(raw_x * 3.0)
        elif name == "text_raw":
            extras[name] = leaf(raw_y * 3.0)
        elif name == "text_negatives":
            extras[name] = leaf(F.normalize(torch.randn(n, K_NEGATIVES, d, generator=g), dim=-1))
        elif name == "total_steps":
            extras[name] = total_steps
        elif name == "step":
            extras[name] = 0
        else:
            raise SystemExit(f"benchmarks/losses.py: no synthetic value for the extra {name!r}")
    return x, y, extras


def _step(loss, x, y, extras, i: int) -> None:
    for t in (x, y, *extras.values()):
        if isinstance(t, torch.Tensor):
            t.grad = None
    if "step" in extras:
        extras["step"] = i
    sum(loss(x, y, **extras).values()).backward()


def time_losses(names: list[str], n: int, d: int, device: torch.device, repeats: int, warmup: int,
                stat: str, clock=time.perf_counter) -> dict[str, tuple[float, float | None]]:
    """Seconds of one forward + backward of each loss on (n, d) embeddings (``stat`` over ``repeats``
    timed steps after ``warmup`` untimed ones); peak MiB on CUDA.

    The losses take turns, one step each per round (in a rotating order), so that a load that
    comes and goes on a shared machine falls on all of them alike.
    """
    setups = {}
    for name in names:
        loss = harness.create_loss(name).to(device)
        setups[name] = (loss, *make_inputs(loss, n, d, device, warmup + repeats))
    times: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, float] = {}
    for i in range(warmup + repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            loss, x, y, extras = setups[name]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = clock()
            _step(loss, x, y, extras, i)
            _sync(device)
            if i >= warmup:
                times[name].append(clock() - start)
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
    pick = min if stat == "min" else statistics.median
    return {name: (pick(times[name]), peaks.get(name)) for name in names}


def product_counts(names: list[str], n: int, d: int) -> dict[str, float]:
    """Matrix-product work of one forward + backward of each loss, in N x N x d products (2 N^2 d flops each)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    for name in names:
        loss = harness.create_loss(name)
        x, y, extras = make_inputs(loss, n, d, torch.device("cpu"), 2)
        with FlopCounterMode(display=False) as counter:
            _step(loss, x, y, extras, 0)
        counts[name] = counter.get_total_flops() / (2 * n * n * d)
    return counts


def _pin_mmap_threshold() -> bool:
    """glibc: serve every allocation >= 64 KiB by mmap, so freed tensors leave the resident set."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def cpu_peak_mib(name: str, n: int, d: int) -> float | None:
    """The rise of peak resident memory over one CPU forward + backward (inputs excluded); None off Linux."""
    try:
        loss = harness.create_loss(name)
        x, y, extras = make_inputs(loss, n, d, torch.device("cpu"), 2)
        _step(loss, x, y, extras, 0)  # first call: lazy initialisation out of the measurement
        for t in (x, y, *extras.values()):
            if isinstance(t, torch.Tensor):
                t.grad = None
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
        before = _status_kib("VmRSS")
        _step(loss, x, y, extras, 1)
        return (_status_kib("VmHWM") - before) / 1024
    except OSError:
        return None


def cpu_memory_pass(cases: list[tuple[str, int, int]], threads: int | None) -> dict[str, float]:
    """``cpu_peak_mib`` of each (loss, N, d) in a fresh process whose mmap threshold is pinned before
    any allocation (in this one, freed heap memory would serve the step without raising VmHWM)."""
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--memory-child", json.dumps(cases)] + (["--threads", str(threads)] if threads else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.CalledProcessError, ValueError, IndexError) as exc:
        print(f"  memory pass failed: {exc}", file=sys.stderr)
        return {}


def _memory_child(cases_json: str) -> int:
    import json

    if not _pin_mmap_threshold():
        print("{}")
        return 0
    out = {}
    for name, n, d in json.loads(cases_json):
        out[f"{name} {n} {d}"] = cpu_peak_mib(name, n, d)
        print(f"  N={n} d={d} {name}: peak +{out[f'{name} {n} {d}']:.1f} MiB", file=sys.stderr, flush=True)
    print(json.dumps(out))
    return 0


def installed_plugin_losses() -> list[str]:
    """The plugin's losses that are registered (``[]`` when ``harness-objectives`` is not installed)."""
    ours = {p["name"] for p in harness.list_plugins() if p["kind"] == "loss" and p["distribution"] == PLUGIN_DIST}
    return [name for name in PLUGIN if name in ours]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096", help="comma list of batch sizes N")
    parser.add_argument("--dims", default="64,512", help="comma list of embedding dims d")
    parser.add_argument("--losses", default=None, help="comma list of losses (default: built-ins + the plugin's; clip is always timed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--stat", choices=("min", "median"), default="min",
                        help="summary of the timed steps (min: the least disturbed by other load)")
    parser.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                        help="wall: elapsed time; cpu: this process's CPU time (auto: cpu on CPU, wall on CUDA)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory pass")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        return _memory_child(args.memory_child)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    use_cpu_clock = args.clock == "cpu" or (args.clock == "auto" and device.type == "cpu")
    clock, clock_name = (time.process_time, "CPU time") if use_cpu_clock else (time.perf_counter, "wall time")
    plugin = installed_plugin_losses()
    notes = []
    if len(plugin) < len(PLUGIN):
        missing = [n for n in PLUGIN if n not in plugin]
        notes.append(f"{PLUGIN_DIST} is not installed or not loaded (pip install -e plugins/harness-objectives): "
                     f"left out {', '.join(missing)}")
    wanted = args.losses.split(",") if args.losses else BUILTIN + plugin
    unknown = [n for n in wanted if n in PLUGIN and n not in plugin]
    wanted = [n for n in wanted if n not in unknown]
    names = ["clip"] + [n for n in wanted if n and n != "clip"]
    from tabulate import tabulate

    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for d in (int(s) for s in args.dims.split(",")):
            counts = product_counts(names, n, d)
            timed = time_losses(names, n, d, device, args.repeats, args.warmup, args.stat, clock)
            base = timed["clip"][0]
            for name in names:
                seconds, peak = timed[name]
                expected = counts[name] / counts["clip"]
                results.append([n, d, name, seconds, seconds / base, peak, counts[name], expected])
                print(f"  N={n} d={d} {name}: {seconds * 1e3:.2f} ms ({seconds / base:.2f}x; products {expected:.2f}x)",
                      file=sys.stderr, flush=True)
    memory = device.type == "cuda"
    if device.type == "cpu" and not args.no_memory:
        peaks = cpu_memory_pass([(row[2], row[0], row[1]) for row in results], args.threads)
        for row in results:
            row[5] = peaks.get(f"{row[2]} {row[0]} {row[1]}")
        memory = all(row[5] is not None for row in results)

    rows = []
    for n, d, name, seconds, ratio, peak, count, expected in results:
        kind = CLASS.get(name, "")
        target = TARGET.get(kind)
        verdict = "" if target is None or name == "clip" else ("ok" if ratio <= target else "over")
        row = [n, d, name, kind, f"{seconds * 1e3:.2f}", f"{ratio:.2f}", f"{count:.2f}", f"{expected:.2f}",
               f"{ratio / expected:.2f}" if expected > 0 else "", f"{target:g}x" if target else "", verdict]
        if memory:
            row.append(f"{peak:.0f}")
        rows.append(row)
    mem_header = "peak MiB" if device.type == "cuda" else "peak +MiB"
    headers = ["N", "d", "loss", "class", "fwd+bwd ms", "x clip", "NNd", "expected", "measured / expected", "target", ""] \
        + ([mem_header] if memory else [])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nlosses: forward+backward per step, {clock_name}, {args.stat} of {args.repeats}, losses interleaved "
          f"({where}, torch {torch.__version__})\n")
    print(tabulate(rows, headers=headers, tablefmt="github"))
    print("\nNNd: matrix products of one forward + backward in N x N x d units (clip: 3); expected: as a ratio "
          "to clip's; measured / expected: x clip divided by expected")
    if memory and device.type == "cpu":
        print("\npeak +MiB: the rise of the process's peak resident memory over one forward+backward, inputs excluded")
    for note in notes:
        print(f"\nnote: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
