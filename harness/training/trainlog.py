"""A run's training records (``log.jsonl``), its progress callback and its clock.

Every ``log_every`` steps, and after the last, one record: the mean loss over the window, the
last step's terms, learning rate, throughput, elapsed time, the loss's temperature (and bias)
and the dataset's batch statistics. Steps count from 1. Time spent probing (``harness.diagnostics``)
the gap curve (``harness.training.gapcurve``) or writing checkpoints is left out of the training time. With ``curves`` (``harness.training.curves``)
every record also goes to TensorBoard.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any, Callable

import numpy as np
import torch

from harness.diagnostics import TrainingDiagnostics
from harness.training.optim import loss_temperature
from harness.training.state import TrainState


class TrainLog:
    """Owns the log file's training records, the progress callback and the clock of one run."""

    def __init__(self, file: IO[str] | None, log_every: int, steps: int, batch: int, n: int,
                 loss_fn: torch.nn.Module, diagnostics: TrainingDiagnostics,
                 progress: Callable[[TrainState], None] | None, curves=None, gap_curve=None) -> None:
        self.file, self.log_every, self.steps, self.batch, self.n = file, log_every, steps, batch, n
        self.gap_curve = gap_curve  # harness.training.gapcurve.GapCurve, or None
        self.loss_fn, self.diagnostics, self.progress, self.curves = loss_fn, diagnostics, progress, curves
        self.final_loss: float | None = None  # the last record's loss
        self.t0 = time.perf_counter()
        self.window_t, self.window_n, self.recent = self.t0, 0, []

    def step_done(self, step: int, total: torch.Tensor, terms: dict[str, torch.Tensor], lr: float, rows: int) -> None:
        """After the 0-based step ``step`` of ``rows`` pairs: the progress callback, and a record when one is due."""
        loss_value = float(total.detach())
        self.recent.append(loss_value)
        self.window_n += rows
        now = time.perf_counter()
        sps = self.window_n / max(now - self.window_t, 1e-9)
        if self.progress:
            self.progress(TrainState(step + 1, self.steps, loss_value, sps))
        if (step + 1) % self.log_every == 0 or step + 1 == self.steps:
            self._record(step, terms, lr, sps, now)
            self.window_t, self.window_n, self.recent = now, 0, []

    def _record(self, step: int, terms: dict[str, torch.Tensor], lr: float, sps: float, now: float) -> None:
        record = {
            "step": step + 1,
            "epoch": (step + 1) * self.batch / self.n,
            "loss": float(np.mean(self.recent)),
            "terms": {k: float(v.detach()) for k, v in terms.items()},
            "lr": lr,
            "samples_per_s": sps,
            "elapsed_s": now - self.t0,
            **loss_temperature(self.loss_fn),
            **self.diagnostics.window_record(),
        }
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.curves is not None:
            self.curves.add(record)
        self.final_loss = record["loss"]

    def probe(self, done: int) -> None:
        """The diagnostics' probe and the gap curve's point after ``done`` steps (when due), their
        time off the clock."""
        before = self.diagnostics.seconds
        record = self.diagnostics.probe(done, self.file)
        if record is not None and self.curves is not None:
            self.curves.add(record)
        self.off_clock(self.diagnostics.seconds - before)
        if self.gap_curve is not None:
            before = self.gap_curve.seconds
            record = self.gap_curve.measure(done, done * self.batch / self.n, self.file)
            if record is not None and self.curves is not None:
                self.curves.add(record)
            self.off_clock(self.gap_curve.seconds - before)

    def off_clock(self, seconds: float) -> None:
        """Leave ``seconds`` just spent (probing, checkpointing) out of the training time."""
        self.t0 += seconds
        self.window_t += seconds

    def state_dict(self) -> dict[str, Any]:
        """The window's losses and pairs, the last record's loss and the clock, for a checkpoint."""
        now = time.perf_counter()
        return {"recent": list(self.recent), "window_n": self.window_n, "final_loss": self.final_loss,
                "elapsed": now - self.t0, "window": now - self.window_t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpoint's window and clock (the training time of the steps it holds counts)."""
        now = time.perf_counter()
        self.recent, self.window_n = [float(x) for x in state["recent"]], int(state["window_n"])
        self.final_loss = None if state["final_loss"] is None else float(state["final_loss"])
        self.t0, self.window_t = now - float(state["elapsed"]), now - float(state["window"])

    def elapsed(self) -> float:
        """Training time so far, in seconds."""
        return time.perf_counter() - self.t0
