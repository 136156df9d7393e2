"""The optimizer side of training, open_clip's conventions: AdamW's parameter groups, the
learning-rate schedule (linear warmup, cosine decay), one update, and the loss's temperature.

- Weight decay applies to weight matrices only; gains, biases, embeddings of rank < 2 and every
  parameter of the loss (learnable temperature, bias) are excluded, as open_clip does.
- A learnable ``logit_scale`` is clamped to [0, ln 100] after each step (open_clip's trainer).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.config import TrainConfig
from harness.types import MAX_LOGIT_SCALE


def total_steps(cfg: TrainConfig, n_pairs: int) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    per_epoch = max(1, n_pairs // min(cfg.batch_size, max(n_pairs, 1)))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def lr_at(step: int, cfg: TrainConfig, steps: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    base, warmup = cfg.lr, cfg.warmup
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def param_groups(model: torch.nn.Module, loss: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    def no_decay(name: str, p: torch.nn.Parameter) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (rest if no_decay(name, p) else decay).append(p)
    rest += [p for p in loss.parameters() if p.requires_grad]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def new_optimizer(model: torch.nn.Module, loss: torch.nn.Module, cfg: TrainConfig,
                  device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, loss, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
        fused=device.type in ("cpu", "cuda"),  # one kernel for all params: ~6x faster optimizer step on CPU
    )


def learnable_scale(loss: torch.nn.Module) -> torch.nn.Parameter | None:
    """The loss's ``logit_scale`` when it is a trained parameter (the one ``update`` clamps), else None."""
    scale = getattr(loss, "logit_scale", None)
    return scale if isinstance(scale, torch.nn.Parameter) and scale.requires_grad else None


def update(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, grad_clip: float | None,
           scale: torch.nn.Parameter | None) -> None:
    """One optimizer step from the gradients in ``.grad`` (scaled, under fp16): unscale them, clip
    their norm to ``grad_clip`` (if set), step, and clamp ``scale`` (if given) to [0, ln 100]."""
    if scaler is not None:
        scaler.unscale_(opt)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if scale is not None:
        with torch.no_grad():
            scale.clamp_(0, MAX_LOGIT_SCALE)


def loss_temperature(loss: torch.nn.Module) -> dict[str, float]:
    """The loss's current temperature (1/exp(logit_scale)) and bias, when it has them."""
    out = {}
    scale = getattr(loss, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        out["temperature"] = float(torch.exp(-scale.detach().float().clamp(max=MAX_LOGIT_SCALE)).mean())
    bias = getattr(loss, "logit_bias", None)
    if isinstance(bias, torch.Tensor):
        out["bias"] = float(bias.detach().float().mean())
    return out
