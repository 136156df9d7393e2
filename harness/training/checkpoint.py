"""Mid-run checkpoints: what a killed job needs to continue exactly as if it had never stopped.

Every ``train.checkpoint_every`` steps, rank 0 writes ``<dir>/checkpoint.pt`` atomically (a temporary
file in the same directory, fsync, ``os.replace``, fsync of the directory), ``<dir>`` being outside
the job's temporary directory (the executors use ``<runs>/<suite>/.checkpoints/<job-id>/``). It is
one ``torch.save`` of plain data and tensors:

- ``format``, ``version``, ``key`` (the job's id), ``steps``, ``n``, ``batch``, ``workers``: what run
  it belongs to; ``step``: the steps done (``LoopState.step``, so the schedule position);
- ``model``, ``loss``, ``ema``: the towers', the loss's and ``LoopState.ema``'s state dicts (``ema``
  None without one); ``optimizer``, ``scaler``: AdamW's and the GradScaler's (None without one);
- ``data``: the ``DataOrder`` (its generator's ``bit_generator.state``, the permutation, the position);
- ``rng``: torch CPU (and the CUDA device's), Python ``random`` and numpy's global generator;
- ``diagnostics``, ``log``: the accumulators of ``TrainingDiagnostics`` and ``TrainLog``, and the
  text of ``log.jsonl`` so far (restored into the resumed job's log, which then reads as the
  uninterrupted run's).

A checkpoint is never trusted (``harness.training.checkpoint_read``): a refused one is one line in
the job's log (a ``CheckpointWarning``) and the job starts from step 0. Everything is checked before
anything is changed; a load that still fails half-way raises ``ResumeFailed``, and the runner runs
the job again from scratch.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.distributed import agree
from harness.training.checkpoint_read import (FORMAT, MAX_LOG_BYTES, VERSION, CheckpointRefused, check, read,
                                              rng_state, state_bytes)

__all__ = ["CheckpointRefused", "CheckpointWarning", "Checkpointing", "Checkpoints", "ResumeFailed", "read"]

NAME = "checkpoint.pt"
SLACK_BYTES = 64 * 2**20  # pickle, RNG states and small tensors beyond the state dicts


@dataclass(frozen=True)
class Checkpointing:
    """Where a run keeps its checkpoint, how often it writes one (0: never) and whose it is.

    ``resume`` False starts from step 0 whatever the directory holds (the runner's second try after
    a ``ResumeFailed``)."""

    dir: Path
    every: int
    key: str
    resume: bool = True

    @property
    def path(self) -> Path:
        return self.dir / NAME


class CheckpointWarning(UserWarning):
    """A checkpoint refused, or one that could not be written (the run goes on)."""


class ResumeFailed(Exception):
    """A checkpoint passed the checks but failed while being loaded: the run's objects are spoiled."""


# ------------------------------------------------------------------------------------ writing


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def real_dir(directory: Path) -> Path:
    """``directory`` as a real directory: a symlink or a file in its place is removed first."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        directory.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save(payload)`` to ``path`` through a temporary file in its directory, fsynced, then
    ``os.replace``d: ``path`` is always the old checkpoint or the new one, never half of either."""
    real_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_stale_temporaries(directory: Path) -> None:
    """Temporary files of writes that a killed run left (the job's lock says no writer is alive)."""
    if directory.is_dir() and not directory.is_symlink():
        for tmp in directory.glob(f".{NAME}.*.tmp"):
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ capture


def capture(key: str, plan, model: torch.nn.Module, loss_fn: torch.nn.Module, state, device: torch.device,
            diagnostics, log, log_text: str) -> dict[str, Any]:
    """The checkpoint of a run after ``state.step`` steps (tensors by reference: save it at once)."""
    ema = getattr(state, "ema", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "key": key,
        "steps": plan.steps,
        "n": plan.n,
        "batch": plan.batch,
        "workers": plan.workers,
        "step": state.step,
        "model": model.state_dict(),
        "loss": loss_fn.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": state.opt.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "data": {"rng": json.dumps(state.data.rng.bit_generator.state), "order": torch.from_numpy(state.data.order),
                 "pos": state.data.pos},
        "rng": rng_state(device),
        "diagnostics": diagnostics.state_dict(),
        "log": {**log.state_dict(), "text": log_text},
    }


# ------------------------------------------------------------------------------------ restoring


def restore(payload: dict[str, Any], model, loss_fn, state, device: torch.device, diagnostics, log) -> None:
    """Put a checked checkpoint's state into the run's objects; ``ResumeFailed`` if that breaks."""
    try:
        model.load_state_dict(payload["model"])
        loss_fn.load_state_dict(payload["loss"])
        ema = getattr(state, "ema", None)
        if ema is not None:
            ema.load_state_dict(payload["ema"])
        state.opt.load_state_dict(payload["optimizer"])
        if state.scaler is not None:
            state.scaler.load_state_dict(payload["scaler"])
        data = payload["data"]
        state.data.rng.bit_generator.state = json.loads(data["rng"])
        state.data.order, state.data.pos = data["order"].numpy().copy(), data["pos"]
        state.step = payload["step"]
        rng = payload["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        version, internal, gauss = json.loads(rng["python"])
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = json.loads(rng["numpy"])
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        diagnostics.load_state_dict(payload["diagnostics"])
        log.load_state_dict(payload["log"])
    except Exception as exc:
        raise ResumeFailed(f"the checkpoint failed while loading: {type(exc).__name__}: {exc}") from exc


class Checkpoints:
    """A run's checkpoints: ``load`` the one to resume from (checked), ``save`` one when due."""

    def __init__(self, spec: Checkpointing, plan, model, loss_fn, state, device: torch.device) -> None:
        self.spec, self.plan, self.model, self.loss_fn, self.state, self.device = spec, plan, model, loss_fn, state, device
        self.seconds = 0.0  # time spent writing checkpoints
        self.written = 0
        self._failed = False

    def limit(self) -> int:
        """The largest checkpoint this run could make: its state dicts, AdamW's two moments per
        parameter, the data order, slack for the rest, and the log text."""
        tensors = state_bytes(self.model, self.loss_fn, getattr(self.state, "ema", None))
        return 4 * tensors + 8 * self.plan.n + SLACK_BYTES + MAX_LOG_BYTES

    def load(self) -> dict[str, Any] | None:
        """The checked checkpoint to resume from, or None (a refusal is one ``CheckpointWarning``).

        The workers of a job each read it and resume only if all of them found the same step
        (a node that does not see the shared directory makes every worker start from 0)."""
        if not self.spec.resume or self.plan.steps <= 1:
            return None
        payload, why = self._read()
        if self.plan.workers > 1 and not agree(payload["step"] if payload else 0, self.device):
            payload, why = None, "the job's workers did not all find it"
        if payload is None and why != "no checkpoint":
            warnings.warn(f"checkpoint refused: {why}; training starts from step 0", CheckpointWarning, stacklevel=2)
        return payload

    def _read(self) -> tuple[dict[str, Any] | None, str]:
        """``(payload, "")`` when the checkpoint passes every check, else ``(None, why)``."""
        if self.spec.dir.is_symlink():
            return None, f"{self.spec.dir} is a symlink"
        if self.plan.rank == 0:
            remove_stale_temporaries(self.spec.dir)
        try:
            payload = read(self.spec.path, self.limit())
            check(payload, self.spec.key, self.plan, self.model, self.loss_fn, self.state, self.device)
        except CheckpointRefused as exc:
            return None, str(exc)
        except Exception as exc:  # a check tripped over something no check foresaw: still a refusal
            return None, f"checking it failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return payload, ""

    def due(self, done: int) -> bool:
        every = self.spec.every
        return self.plan.rank == 0 and every > 0 and done % every == 0 and 0 < done < self.plan.steps

    def restore(self, payload: dict[str, Any], diagnostics, log) -> None:
        """Resume from a checked checkpoint: the run's objects, then its log text (``ResumeFailed``
        when loading breaks half-way)."""
        restore(payload, self.model, self.loss_fn, self.state, self.device, diagnostics, log)
        if log.file is not None:
            log.file.write(payload["log"]["text"])
            log.file.flush()

    def save(self, diagnostics, log) -> float:
        """Write the checkpoint of ``state.step`` steps; returns the seconds it took. A write that
        fails is one ``CheckpointWarning`` (the first time) and the run goes on."""
        t0 = time.perf_counter()
        text = ""
        try:
            if log.curves is not None:  # every point up to this checkpoint is on disk before it is
                log.curves.flush()
            if log.file is not None:
                log.file.flush()
                text = Path(log.file.name).read_text()
            payload = capture(self.spec.key, self.plan, self.model, self.loss_fn, self.state, self.device,
                              diagnostics, log, text)
            write_atomic(self.spec.path, payload)
            self.written += 1
        except Exception as exc:  # a checkpoint saves time; failing to write one never fails the job
            if not self._failed:
                warnings.warn(f"checkpoint not written: {type(exc).__name__}: {exc}", CheckpointWarning, stacklevel=2)
            self._failed = True
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        return seconds
