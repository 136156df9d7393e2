"""Training curves as TensorBoard event files (a suite's ``log: [tensorboard]``, ``harness run --log
tensorboard``), written by rank 0 while the job trains.

Each ``log.jsonl`` record becomes scalars at its step (steps counted from 1, as in the log):
``loss/total`` (the window's mean) and ``loss/<term>`` (the last step's terms), ``lr``,
``temperature`` (and ``bias``), ``throughput/samples_per_s``, ``epoch``, ``batch/<statistic>`` (a
dataset's batch statistics) and ``probe/<attribute>`` (the attribute probes of
``harness.diagnostics``, at step 0 too) and ``gap/<metric>`` (the gap curve of
``harness.training.gapcurve``, at step 0 too). A fresh run empties its directory first; a resumed one
(``first_step`` > 0) keeps what was written up to its checkpoint and opens a writer with
``purge_step = first_step + 1``, so TensorBoard drops whatever the killed run wrote after it and the
curves continue with the same step numbers as an uninterrupted run's. ``flush`` is called before
each checkpoint is written, so no point the checkpoint stands for is lost with the process.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


class Curves:
    """A job's TensorBoard writer: ``add(record)`` for each log record, ``flush()``, ``close()``."""

    def __init__(self, directory: Path, first_step: int = 0, title: str | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory = Path(directory)
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            directory.unlink()
        elif first_step == 0 and directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(directory), purge_step=first_step + 1 if first_step else None, flush_secs=30)
        if title and first_step == 0:
            self.writer.add_text("job", title, 0)

    def add(self, record: dict[str, Any]) -> None:
        step, scalar = int(record["step"]), self.writer.add_scalar
        for kind in ("probe", "gap"):  # a probe or gap-curve record: its values only
            if kind in record:
                for name, value in record[kind].items():
                    scalar(f"{kind}/{name}", value, step)
                return
        scalar("loss/total", record["loss"], step)
        for name, value in record.get("terms", {}).items():
            scalar(f"loss/{name}", value, step)
        scalar("lr", record["lr"], step)
        for name in ("temperature", "bias"):
            if isinstance(record.get(name), (int, float)):
                scalar(name, record[name], step)
        scalar("throughput/samples_per_s", record["samples_per_s"], step)
        scalar("epoch", record["epoch"], step)
        for name, value in record.get("batch", {}).items():
            scalar(f"batch/{name}", value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
