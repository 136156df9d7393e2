"""Data loading speed: images/s of every built-in dataset's batches, beside the training step.

    .venv/bin/python benchmarks/data.py [--batch 256] [--files 512] [--repeats 20]

Rows: rendering a ``shapes`` batch (images only, and images + captions as ``get_batch`` returns
them), the cached (memory-mapped) shapes split, ``digits``, and the ``image_text_files`` loaders:
the one-off decode of CSV and webdataset files (JPEG 96x96 -> 32x32, written to a temp dir) and
their in-memory batches. When ``benchmarks/train_step.py`` exists (``step_time(config, batch)``
-> seconds per optimiser step), the tiny encoder's training throughput is printed too, so data
loading can be compared with the step it feeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import platform
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tabulate import tabulate

from harness.builtin.datasets.digits import DigitsDataset
from harness.builtin.datasets.image_text_files import ImageTextFiles
from harness.builtin.datasets.shapes import ShapesDataset, render

HERE = Path(__file__).resolve().parent


def per_call(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(wall, CPU) median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call.

    CPU time (all threads of this process) is what a call costs on an idle machine; wall time
    also counts waiting for cores other processes hold.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def write_files(folder: Path, n: int, side: int = 96) -> tuple[Path, str]:
    """``n`` JPEGs (smooth colour blocks), a CSV naming them, and the same pairs in 2 webdataset shards."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir()
    rows = ["filepath,title"]
    shards: list[dict[str, bytes]] = [{}, {}]
    for i in range(n):
        small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        (folder / "img" / f"{i:05d}.jpg").write_bytes(buf.getvalue())
        rows.append(f"img/{i:05d}.jpg,caption number {i}")
        shards[i % 2][f"{i:05d}.jpg"] = buf.getvalue()
        shards[i % 2][f"{i:05d}.txt"] = f"caption number {i}".encode()
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    for k, members in enumerate(shards):
        with tarfile.open(folder / f"{k:05d}.tar", "w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder / "pairs.csv", str(folder / "{00000..00001}.tar")


def train_step_row(batch: int) -> list[object] | None:
    path = HERE / "train_step.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("train_step", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        seconds = module.step_time("harness-tiny-vit", batch)
    except Exception as exc:  # a benchmark, not a test: report and go on
        return ["train step: harness-tiny-vit (failed)", batch, f"{type(exc).__name__}: {exc}"[:60], "", "", ""]
    name = "train step: harness-tiny-vit (fwd+bwd+AdamW)"
    return [name, batch, f"{1000 * seconds:.1f}", "", f"{batch / seconds:,.0f}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--files", type=int, default=512, help="images written for the CSV/webdataset loaders")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    b, rng = args.batch, np.random.default_rng(0)
    rows: list[list[object]] = []

    def row(name: str, fn: Callable[[], object], n: int, repeats: int = args.repeats) -> None:
        wall, cpu = per_call(fn, repeats)
        speed = [f"{n / wall:,.0f}", f"{n / max(cpu, 1e-9):,.0f}"]
        rows.append([name, n, f"{1000 * wall:.2f}", f"{1000 * cpu:.2f}", *speed])

    for size in (32, 64):
        shapes = ShapesDataset(image_size=size, train_size=max(4 * b, 2048), eval_size=8)
        pairs = shapes.train_pairs()
        idx = rng.integers(0, len(pairs), size=b)
        rows_ = pairs.scenes.take(idx)
        row(f"shapes {size}x{size}: render", lambda: render(rows_, size), b)
        row(f"shapes {size}x{size}: get_batch (+captions)", lambda: pairs.get_batch(idx, rng), b)
    with tempfile.TemporaryDirectory() as tmp:
        cached = ShapesDataset(train_size=max(4 * b, 2048), eval_size=8, cache_dir=tmp).train_pairs()
        idx = rng.integers(0, len(cached), size=b)
        row("shapes 32x32: get_batch from cache_dir (mmap)", lambda: cached.get_batch(idx, rng), b)

    digits = DigitsDataset(image_size=32).train_pairs()
    idx = rng.integers(0, len(digits), size=b)
    row("digits 32x32: get_batch", lambda: digits.get_batch(idx, rng), b)

    with tempfile.TemporaryDirectory() as tmp:
        csv_path, shards = write_files(Path(tmp), args.files)
        for name, path in (("csv", str(csv_path)), ("webdataset", shards)):
            def load(path=path):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return ImageTextFiles(path, image_size=32, eval_fraction=0.1).train_pairs()

            row(f"image_text_files {name}: decode all (JPEG 96->32)", load, args.files, repeats=3)
            loaded = load()
            idx = rng.integers(0, len(loaded), size=b)
            row(f"image_text_files {name}: get_batch (in memory)", lambda: loaded.get_batch(idx, rng), b)

    step = train_step_row(128)
    if step is not None:
        rows.append(step)
    print(f"# data loading, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"# load average {os.getloadavg()[0]:.1f}: wall times include waiting for busy cores; CPU times do not")
    print(tabulate(rows, headers=["what", "images", "wall ms", "CPU ms", "images/s (wall)", "images/s (CPU)"],
                   colalign=("left",) + ("right",) * 5))
    if step is None:
        print("(benchmarks/train_step.py not found: no training-step row)")


if __name__ == "__main__":
    main()
