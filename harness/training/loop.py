"""``train``: AdamW with linear warmup and cosine decay over a job's steps, open_clip conventions.

One optimizer step = one call of the loss's ``forward`` on the whole batch (``harness.training.step``),
then one update (``harness.training.optim.update``). A run is fixed before its first step
(``Plan``: sizes, precision, extras, workers, chunking); what changes between steps is its
``LoopState`` (``harness.training.state``). Steps are 0-based in code, counted from 1 in messages
and logs. With ``checkpoint`` a run resumes from its checkpoint and writes one every
``train.checkpoint_every`` steps (``harness.training.checkpoint``); with ``curves`` it writes
TensorBoard curves (``harness.training.curves``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from harness.config import TrainConfig
from harness.diagnostics import TrainingDiagnostics
from harness.training.gapcurve import GapCurve
from harness.distributed import world
from harness.precision import resolve_precision
from harness.training.checkpoint import Checkpointing, Checkpoints
from harness.training.checks import check_split, refuse_batch_norm
from harness.training.curves import Curves
from harness.training.gradcache import GradCacheStep
from harness.training.inputs import fetch_batch
from harness.training.memory import PeakMemory
from harness.training.momentum import EmaTowers, momentum_step, new_ema, setup_loss
from harness.training.optim import learnable_scale, loss_temperature, lr_at, new_optimizer, set_lr, total_steps, update
from harness.training.state import DataOrder, LoopState, TrainState
from harness.training.step import PlainStep, Step
from harness.training.trainlog import TrainLog
from harness.types import declared_extras


@dataclass(frozen=True)
class Plan:
    """What a run is, fixed before its first step."""

    n: int  # pairs in the training split
    steps: int
    batch: int  # pairs per step (all workers together)
    precision: str
    extras: tuple[str, ...]  # what the loss declares (harness.types.LOSS_EXTRAS)
    rank: int
    workers: int
    micro: int | None  # pairs per GradCache chunk; None: the per-worker batch is not chunked

    @property
    def per_worker(self) -> int:
        return self.batch // self.workers


def make_plan(cfg: TrainConfig, n: int, steps: int, encoder, loss_fn: torch.nn.Module, device: torch.device) -> Plan:
    batch = min(cfg.batch_size, n)
    precision = resolve_precision(cfg.precision or getattr(encoder, "precision", None), device)
    rank, workers = world()
    check_split(batch, n, workers)
    per_worker = batch // workers
    micro = cfg.micro_batch if cfg.micro_batch is not None and cfg.micro_batch < per_worker else None
    return Plan(n, steps, batch, precision, declared_extras(loss_fn), rank, workers, micro)


def make_step(plan: Plan, encoder, loss_fn: torch.nn.Module, state: LoopState, device: torch.device,
              loss_name: str) -> Step:
    """``PlainStep`` in one process without chunks, else ``GradCacheStep`` (batch norm refused)."""
    args = (encoder, loss_fn, state.opt, state.scaler, device, plan.precision, plan.extras, plan.steps, loss_name,
            EmaTowers.of(encoder, state.ema))
    if plan.micro is None and plan.workers == 1:
        return PlainStep(*args)
    refuse_batch_norm(encoder.model, f"train.micro_batch {plan.micro}" if plan.micro is not None
                      else f"{plan.workers} workers")
    return GradCacheStep(*args, micro=plan.micro or plan.per_worker)


@dataclass(eq=False)
class Run:
    """A run's fixed parts: its plan and config, the pairs, its step, what it clamps, its diagnostics."""

    plan: Plan
    cfg: TrainConfig
    pairs: Any
    step_fn: Step
    scale: torch.nn.Parameter | None  # the loss's learnable logit_scale, clamped after each update
    diagnostics: TrainingDiagnostics
    checkpoints: Checkpoints | None = None


def train(
    encoder,
    loss_fn: torch.nn.Module,
    pairs,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    log_path: Path | None = None,
    progress: Callable[[TrainState], None] | None = None,
    loss_name: str = "loss",
    checkpoint: Checkpointing | None = None,
    curves: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """Train ``encoder.model`` (and the loss's own parameters) on ``pairs``; return train metrics.

    ``checkpoint``: resume from its checkpoint when there is a good one, and write one every
    ``checkpoint.every`` steps; ``curves``: ``(directory, title)`` of the TensorBoard curves (rank 0).
    """
    n = len(pairs)
    steps = total_steps(cfg, n)
    stats: dict[str, Any] = {"steps": steps}
    model = encoder.model.to(device)
    loss_fn = loss_fn.to(device)
    if steps == 0:
        stats["env"] = {"resumed_from_step": 0}
        stats.update(loss_temperature(loss_fn))
        return stats
    if n == 0:
        raise ValueError("the dataset's training split is empty")
    plan = make_plan(cfg, n, steps, encoder, loss_fn, device)
    setup_loss(loss_fn, n)  # contract v3: before the first step and before any saved state is restored
    stats["precision"] = plan.precision
    opt = new_optimizer(model, loss_fn, cfg, device)
    scaler = torch.amp.GradScaler(device.type) if plan.precision == "fp16" else None
    state = LoopState(0, DataOrder.start(seed, n, plan.batch), opt, scaler, ema=new_ema(model, loss_fn))
    stats["env"] = {"workers_per_job": plan.workers, "micro_batch": plan.micro}
    memory = PeakMemory(device)
    with open(log_path, "a") if log_path else contextlib.nullcontext() as log_file:
        model.train()
        loss_fn.train()
        step_fn = make_step(plan, encoder, loss_fn, state, device, loss_name)
        diagnostics = TrainingDiagnostics(pairs, encoder, device, plan.precision, steps, seed, enabled=plan.rank == 0)
        saver = Checkpoints(checkpoint, plan, model, loss_fn, state, device) if checkpoint else None
        resume = saver.load() if saver else None
        writer = Curves(curves[0], resume["step"] if resume else 0, curves[1]) if curves and plan.rank == 0 else None
        gap_curve = (GapCurve(pairs, encoder, device, plan.precision, steps, cfg.gap_curve, n, seed, cfg.eval_batch_size)
                     if cfg.gap_curve and plan.rank == 0 else None)
        log = TrainLog(log_file, cfg.log_every, steps, plan.batch, n, loss_fn, diagnostics, progress, writer, gap_curve)
        try:
            if resume is not None:
                saver.restore(resume, diagnostics, log)
            else:
                log.probe(0)
            stats["env"]["resumed_from_step"] = state.step
            run_steps(Run(plan, cfg, pairs, step_fn, learnable_scale(loss_fn), diagnostics, saver), state, log)
        finally:
            if writer is not None:
                writer.close()
    elapsed = log.elapsed()
    if saver is not None:
        stats["env"].update(checkpoint_every=checkpoint.every, checkpoints_written=saver.written,
                            checkpoint_s=saver.seconds)
    stats["env"].update(memory.read(plan.workers))
    stats["final_loss"] = log.final_loss
    stats.update(loss_temperature(loss_fn))
    stats.update(diagnostics.summary())
    stats["train_time_s"] = elapsed
    stats["samples_per_s"] = steps * plan.batch / max(elapsed, 1e-9)
    return stats


def run_steps(run: Run, state: LoopState, log: TrainLog) -> None:
    """The steps from ``state.step`` to the last, each logged and followed by its probe (when due)."""
    while state.step < run.plan.steps:
        step = state.step
        total, terms, lr, rows = one_step(run, state)
        log.step_done(step, total, terms, lr, rows)
        log.probe(step + 1)
        if run.checkpoints is not None and run.checkpoints.due(step + 1):
            log.off_clock(run.checkpoints.save(run.diagnostics, log))


def one_step(run: Run, state: LoopState) -> tuple[torch.Tensor, dict[str, torch.Tensor], float, int]:
    """Read the next batch, compute its gradients, update; ``(total, terms, lr, pairs)`` of the step."""
    step = state.step
    idx = state.data.next()
    lr = lr_at(step, run.cfg, run.plan.steps)
    set_lr(state.opt, lr)
    batch = fetch_batch(run.pairs, idx, state.data.rng, run.plan.extras)
    run.diagnostics.after_batch()
    total, terms = run.step_fn(batch, step)
    update(state.opt, state.scaler, run.cfg.grad_clip, run.scale)
    momentum_step(state.ema, run.step_fn)  # contract v3: the momentum towers follow the update
    state.step = step + 1
    return total, terms, lr, len(idx)
