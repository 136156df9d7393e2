"""Reading a mid-run checkpoint as hostile data (``harness.training.checkpoint`` writes them).

A checkpoint is never trusted: it is opened without following a symlink or blocking on a FIFO and
checked on the descriptor it is read from; a file over the size limit (from the model's size), a
zip whose members are compressed or add up past the limit, anything ``torch.load(weights_only=True)``
refuses, another job's key, another run's shape (steps, pairs, batch, workers), a step out of range,
state dicts whose keys, shapes or dtypes differ, an optimizer state of other parameters, a data
order that is no permutation of the dataset, RNG states numpy or Python would not take, malformed
accumulators: each raises ``CheckpointRefused`` with one line saying why. Nothing of the run is
touched until all of it has passed.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT, VERSION = "harness-checkpoint", 1
MAX_LOG_BYTES = 256 * 2**20  # the log text a checkpoint may carry


class CheckpointRefused(Exception):
    """Why a checkpoint is not used (one line)."""


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a step may draw from: torch CPU (and CUDA), Python ``random``, numpy's global one."""
    legacy = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps([legacy[0], legacy[1].tolist(), *legacy[2:]]),
    }


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


def _check_tensors(saved: Any, current: dict[str, Any], what: str, lazy: bool = False) -> None:
    """``saved`` has exactly ``current``'s keys, each tensor of the same shape and dtype. With
    ``lazy`` (a loss's state), an empty tensor that the loss sizes at its first batch (a queue of
    width 0 until the features' dimension is known) takes any shape of the same rank: the loss's
    own ``load_state_dict`` adopts it, or fails and the run starts again from scratch."""
    if not isinstance(saved, dict) or set(saved) != set(current):
        raise CheckpointRefused(f"its {what} state has other entries than this run's")
    for name, now in current.items():
        was = saved[name]
        if isinstance(now, torch.Tensor):
            unsized = lazy and now.numel() == 0 and isinstance(was, torch.Tensor) and was.dim() == now.dim()
            if not isinstance(was, torch.Tensor) or was.dtype != now.dtype or was.shape != now.shape and not unsized:
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
    _check_tensors(payload.get("loss"), loss_fn.state_dict(), "loss", lazy=True)
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
