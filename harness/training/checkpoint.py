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

A checkpoint is never trusted: a symlink, a file over the size limit (from the model's size), a zip
whose members are compressed or add up past the limit, anything ``torch.load(weights_only=True)``
refuses, another job's key, another run's shape, state dicts whose keys, shapes or dtypes differ,
RNG states numpy or Python would not take: each is refused (``CheckpointRefused``, one line in the
job's log through a ``CheckpointWarning``) and the job starts from step 0. Everything is checked
before anything is changed; a load that still fails half-way raises ``ResumeFailed``, and the
runner runs the job again from scratch.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import stat
import time
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT, VERSION, NAME = "harness-checkpoint", 1, "checkpoint.pt"
MAX_LOG_BYTES = 256 * 2**20  # the log text a checkpoint may carry
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


class CheckpointRefused(Exception):
    """Why a checkpoint is not used (one line)."""


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


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a step may draw from: torch CPU (and CUDA), Python ``random``, numpy's global one."""
    legacy = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps([legacy[0], legacy[1].tolist(), *legacy[2:]]),
    }


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


# ------------------------------------------------------------------------------------ reading


def state_bytes(*modules) -> int:
    """Bytes of the tensors in the state dicts of ``modules`` (None entries skipped)."""
    total = 0
    for m in modules:
        if m is not None:
            total += sum(t.numel() * t.element_size() for t in m.state_dict().values() if isinstance(t, torch.Tensor))
    return total


def read(path: Path, limit: int) -> dict[str, Any]:
    """The checkpoint at ``path``, read with ``torch.load(weights_only=True)`` within ``limit`` bytes:
    opened without following a symlink or waiting on a FIFO, checked on the descriptor it reads."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointRefused("no checkpoint") from None
    except OSError as exc:
        why = "is a symlink" if exc.errno == errno.ELOOP else f"cannot be opened ({exc.strerror or exc})"
        raise CheckpointRefused(f"{path.name} {why}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointRefused(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise CheckpointRefused(f"{path.name} is {info.st_size} bytes, over the limit of {limit} for this model")
        try:
            with zipfile.ZipFile(fh) as archive:
                members = archive.infolist()
            if any(m.compress_type != zipfile.ZIP_STORED for m in members) or sum(m.file_size for m in members) > limit:
                raise CheckpointRefused(f"{path.name} holds compressed or oversized members")
            fh.seek(0)
            payload = torch.load(fh, map_location="cpu", weights_only=True)
        except CheckpointRefused:
            raise
        except pickle.UnpicklingError:
            raise CheckpointRefused(f"{path.name} holds objects that torch.load(weights_only=True) refuses") from None
        except Exception as exc:  # truncated, corrupt
            text = " ".join(str(exc).split())[:200]
            raise CheckpointRefused(f"{path.name} cannot be read: {type(exc).__name__}: {text}") from None
    if not isinstance(payload, dict):
        raise CheckpointRefused(f"{path.name} is not a checkpoint")
    return payload


def _check_tensors(saved: Any, current: dict[str, Any], what: str) -> None:
    """``saved`` has exactly ``current``'s keys, each tensor of the same shape and dtype."""
    if not isinstance(saved, dict) or set(saved) != set(current):
        raise CheckpointRefused(f"its {what} state has other entries than this run's")
    for name, now in current.items():
        was = saved[name]
        if isinstance(now, torch.Tensor):
            if not isinstance(was, torch.Tensor) or was.shape != now.shape or was.dtype != now.dtype:
                raise CheckpointRefused(f"its {what} entry {name!r} differs in shape or dtype")
        elif type(was) is not type(now):
            raise CheckpointRefused(f"its {what} entry {name!r} differs in type")


def _check_optimizer(saved: Any, opt: torch.optim.Optimizer) -> None:
    current = opt.state_dict()
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise CheckpointRefused("its optimizer state is not an optimizer's")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current["param_groups"]):
        raise CheckpointRefused("its optimizer has other parameter groups")
    for was, now in zip(groups, current["param_groups"]):
        if not isinstance(was, dict) or set(was) != set(now) or was["params"] != now["params"]:
            raise CheckpointRefused("its optimizer has other parameter groups")
    params = [p for g in opt.param_groups for p in g["params"]]
    if not isinstance(saved["state"], dict):
        raise CheckpointRefused("its optimizer state is not an optimizer's")
    for index, entry in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise CheckpointRefused("its optimizer state names parameters this run does not have")
        for name, value in entry.items():
            shape = torch.Size([]) if name == "step" else params[index].shape
            if not isinstance(value, torch.Tensor) or value.shape != shape or not value.is_floating_point():
                raise CheckpointRefused(f"its optimizer state {name!r} of parameter {index} differs in shape")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_rng(saved: Any, device: torch.device) -> None:
    current = rng_state(device)
    if not isinstance(saved, dict) or set(saved) != set(current):
        raise CheckpointRefused("its RNG states are incomplete")
    for name in ("torch", "cuda"):
        was, now = saved[name], current[name]
        if (now is None) != (was is None) or now is not None and (
                not isinstance(was, torch.Tensor) or was.dtype != now.dtype or was.shape != now.shape):
            raise CheckpointRefused(f"its {name} RNG state does not fit this run")
    try:
        version, internal, gauss = json.loads(saved["python"])
        random.Random().setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = json.loads(saved["numpy"])
        np.random.RandomState().set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    except Exception:
        raise CheckpointRefused("its Python or numpy RNG state is not one") from None


def _check_data(saved: Any, data) -> None:
    if not isinstance(saved, dict) or set(saved) != {"rng", "order", "pos"}:
        raise CheckpointRefused("its data order is incomplete")
    order, n = saved["order"], len(data.order)
    if not isinstance(order, torch.Tensor) or order.dtype != torch.int64 or order.shape != (n,):
        raise CheckpointRefused("its data order is not a permutation of this dataset")
    if not torch.equal(order.sort().values, torch.arange(n)):
        raise CheckpointRefused("its data order is not a permutation of this dataset")
    if not isinstance(saved["pos"], int) or not 0 <= saved["pos"] <= n:
        raise CheckpointRefused("its data position is out of range")
    try:
        type(data.rng.bit_generator)().state = json.loads(saved["rng"])
    except Exception:
        raise CheckpointRefused("its data generator state is not one this run's generator takes") from None


def _check_accumulators(saved: Any) -> None:
    diag, log = saved.get("diagnostics"), saved.get("log")
    lists = [diag.get("window"), diag.get("total")] if isinstance(diag, dict) else [None]
    ok = all(isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, list) and all(map(_number, v))
                                         for k, v in d.items()) for d in lists)
    ok = ok and _number(diag.get("seconds")) and isinstance(log, dict) and isinstance(log.get("text"), str)
    ok = ok and isinstance(log.get("recent"), list) and all(map(_number, log["recent"]))
    ok = ok and isinstance(log.get("window_n"), int) and (log.get("final_loss") is None or _number(log["final_loss"]))
    ok = ok and _number(log.get("elapsed")) and _number(log.get("window"))
    if not ok:
        raise CheckpointRefused("its diagnostics or log accumulators are malformed")
    if len(log["text"]) > MAX_LOG_BYTES:
        raise CheckpointRefused("its log text is over the limit")


def check(payload: dict[str, Any], key: str, plan, model, loss_fn, state, device: torch.device) -> None:
    """Refuse (``CheckpointRefused``) a checkpoint that is not this run's or would not load whole."""
    if payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise CheckpointRefused("it is not a harness checkpoint of this version")
    if payload.get("key") != key:
        raise CheckpointRefused(f"it belongs to another job ({str(payload.get('key'))[:40]!r})")
    for name in ("steps", "n", "batch", "workers"):
        if payload.get(name) != getattr(plan, name):
            raise CheckpointRefused(f"it is of another run ({name} {str(payload.get(name))[:20]}, this run {getattr(plan, name)})")
    step = payload.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 < step < plan.steps:
        raise CheckpointRefused(f"its step is out of range (got {str(step)[:20]})")
    _check_tensors(payload.get("model"), model.state_dict(), "model")
    _check_tensors(payload.get("loss"), loss_fn.state_dict(), "loss")
    ema = getattr(state, "ema", None)
    if (ema is None) != (payload.get("ema") is None):
        raise CheckpointRefused("it has EMA towers and this run has none, or the other way round")
    if ema is not None:
        _check_tensors(payload["ema"], ema.state_dict(), "EMA")
    _check_optimizer(payload.get("optimizer"), state.opt)
    scaler = payload.get("scaler")
    if (state.scaler is None) != (scaler is None) or scaler is not None and not (
            isinstance(scaler, dict) and all(isinstance(k, str) and _number(v) for k, v in scaler.items())):
        raise CheckpointRefused("its GradScaler state does not fit this run")
    _check_data(payload.get("data"), state.data)
    _check_rng(payload.get("rng"), device)
    _check_accumulators(payload)


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
        """The checked checkpoint to resume from, or None (a refusal is one ``CheckpointWarning``)."""
        if not self.spec.resume or self.plan.steps <= 1:
            return None
        if self.spec.dir.is_symlink():
            payload, why = None, f"{self.spec.dir} is a symlink"
        else:
            if self.plan.rank == 0:
                remove_stale_temporaries(self.spec.dir)
            try:
                payload = read(self.spec.path, self.limit())
                check(payload, self.spec.key, self.plan, self.model, self.loss_fn, self.state, self.device)
                return payload
            except CheckpointRefused as exc:
                payload, why = None, str(exc)
        if why != "no checkpoint":
            warnings.warn(f"checkpoint refused: {why}; training starts from step 0", CheckpointWarning, stacklevel=2)
        return payload

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
        except OSError as exc:
            if not self._failed:
                warnings.warn(f"checkpoint not written: {type(exc).__name__}: {exc}", CheckpointWarning, stacklevel=2)
            self._failed = True
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        return seconds
