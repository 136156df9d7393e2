"""The training loop: AdamW with linear warmup + cosine decay, open_clip conventions.

- Weight decay applies to weight matrices only; gains, biases, embeddings of rank < 2 and every
  parameter of the loss (learnable temperature, bias) are excluded, as open_clip does.
- One optimizer step = one call of the loss's ``forward``: the batch's L2-normalised features in
  float32, plus exactly the extras the loss declares (``harness.types.LOSS_EXTRAS``), assembled
  here next to where the embeddings are made (``step_inputs``). Its named terms are summed and
  minimised, and each is logged.
- A learnable ``logit_scale`` is clamped to [0, ln 100] after each step (open_clip's trainer).
- A non-finite loss stops the job with ``NonFiniteLoss`` naming the step and the terms; a loss that
  returns something else than a dict of scalar terms stops it with ``BadLossOutput``. Messages and
  logs count steps from 1; the ``step`` extra is the 0-based index.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import TrainConfig
from harness.precision import autocast, resolve_precision

MAX_LOGIT_SCALE = math.log(100.0)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


class BadLossOutput(RuntimeError):
    """A loss's ``forward`` returned something other than a dict of named scalar terms."""


@dataclass
class TrainState:
    """Passed to the progress callback after each step."""

    step: int
    total: int
    loss: float
    samples_per_s: float


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


def param_groups(model: torch.nn.Module, loss: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    def no_decay(name: str, p: torch.nn.Parameter) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (rest if no_decay(name, p) else decay).append(p)
    rest += [p for p in loss.parameters() if p.requires_grad]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


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


def encode_pair_batch(encoder, images, captions, device, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (image, pair) features of one batch."""
    fx, fy, _, _ = encode_pair_batch_raw(encoder, images, captions, device, train)
    return fx, fy


def encode_pair_batch_raw(encoder, images, captions, device, train: bool):
    """(normalised image, normalised pair, raw image, raw pair) features of one batch, in float32."""
    x = encoder.preprocess_images(images, train=train).to(device, non_blocking=True)
    y = encoder.pair_inputs(images, captions, train=train).to(device, non_blocking=True)
    raw_x = encoder.encode_image(x).float()
    raw_y = encoder.encode_pair(y).float()
    return F.normalize(raw_x, dim=-1), F.normalize(raw_y, dim=-1), raw_x, raw_y


def encode_negatives(encoder, negatives: list[list[str]], device) -> torch.Tensor:
    """(N, K, d) normalised text-tower embeddings of N lists of K captions, in the graph."""
    n, k = len(negatives), len(negatives[0]) if negatives else 0
    if n == 0 or k == 0 or any(len(row) != k for row in negatives):
        raise ValueError("the dataset's hard negatives must be N lists of the same number K >= 1 of captions")
    tokens = encoder.tokenize([c for row in negatives for c in row]).to(device, non_blocking=True)
    return F.normalize(encoder.encode_pair(tokens).float(), dim=-1).view(n, k, -1)


def fetch_batch(pairs, idx: np.ndarray, rng: np.random.Generator, negatives: bool):
    """(images, captions, negatives or None); ``get_batch`` alone when the loss wants no negatives."""
    if negatives:
        return pairs.get_batch_with_negatives(idx, rng)
    images, captions = pairs.get_batch(idx, rng)
    return images, captions, None


def step_inputs(encoder, batch, device, precision: str, extras: tuple[str, ...], step: int, steps: int):
    """``(image_features, text_features, extras_kwargs)`` for one loss call, the extras gathered across ranks."""
    from harness.builtin.losses.distributed import gather_batch

    images, captions, negatives = batch
    with autocast(precision, device):
        fx, fy, raw_x, raw_y = encode_pair_batch_raw(encoder, images, captions, device, train=True)
        neg = encode_negatives(encoder, negatives, device) if "text_negatives" in extras else None
    available = {"step": step, "total_steps": steps, "image_raw": raw_x, "text_raw": raw_y, "text_negatives": neg}
    kwargs = {name: available[name] for name in extras}
    return fx, fy, gather_batch(kwargs)


def check_terms(terms: Any, loss_name: str) -> dict[str, torch.Tensor]:
    """The loss's output if it is a non-empty dict of named scalar tensors, else ``BadLossOutput``."""
    wanted = f"loss {loss_name!r} must return a dict of named scalar terms"
    if not isinstance(terms, dict) or not terms:
        got = "an empty dict" if isinstance(terms, dict) else f"a {type(terms).__name__}"
        raise BadLossOutput(f"{wanted}, got {got}")
    for key, value in terms.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise BadLossOutput(f"{wanted}; term {key!r} is {shape}")
    return terms


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
) -> dict[str, Any]:
    """Train ``encoder.model`` (and the loss's own parameters) on ``pairs``; return train metrics."""
    from harness.registry import declared_extras

    n = len(pairs)
    steps = total_steps(cfg, n)
    stats: dict[str, Any] = {"steps": steps}
    model = encoder.model.to(device)
    loss_fn = loss_fn.to(device)
    if steps == 0:
        stats.update(loss_temperature(loss_fn))
        return stats
    if n == 0:
        raise ValueError("the dataset's training split is empty")
    batch = min(cfg.batch_size, n)
    precision = resolve_precision(cfg.precision or getattr(encoder, "precision", None), device)
    stats["precision"] = precision
    extras = declared_extras(loss_fn)
    opt = torch.optim.AdamW(
        param_groups(model, loss_fn, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
        fused=device.type in ("cpu", "cuda"),  # one kernel for all params: ~6x faster optimizer step on CPU
    )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(n), 0
    scale = getattr(loss_fn, "logit_scale", None)
    clamp_scale = isinstance(scale, torch.nn.Parameter) and scale.requires_grad

    log_file = open(log_path, "a") if log_path else None
    model.train()
    loss_fn.train()
    t0 = time.perf_counter()
    window_t, window_n, recent = t0, 0, []
    try:
        for step in range(steps):
            if pos + batch > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos : pos + batch]
            pos += batch
            lr = lr_at(step, cfg, steps)
            for group in opt.param_groups:
                group["lr"] = lr
            data = fetch_batch(pairs, idx, rng, negatives="text_negatives" in extras)
            fx, fy, kwargs = step_inputs(encoder, data, device, precision, extras, step, steps)
            terms = check_terms(loss_fn(fx, fy, **kwargs), loss_name)
            total = sum(terms.values())
            if not torch.isfinite(total):
                shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                raise NonFiniteLoss(f"loss is {float(total.detach())} at step {step + 1} of {steps} ({shown})")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(total).backward()
                scaler.unscale_(opt)
            else:
                total.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if clamp_scale:
                with torch.no_grad():
                    scale.clamp_(0, MAX_LOGIT_SCALE)

            loss_value = float(total.detach())
            recent.append(loss_value)
            window_n += len(idx)
            now = time.perf_counter()
            sps = window_n / max(now - window_t, 1e-9)
            if progress:
                progress(TrainState(step + 1, steps, loss_value, sps))
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                record = {
                    "step": step + 1,
                    "epoch": (step + 1) * batch / n,
                    "loss": float(np.mean(recent)),
                    "terms": {k: float(v.detach()) for k, v in terms.items()},
                    "lr": lr,
                    "samples_per_s": sps,
                    "elapsed_s": now - t0,
                    **loss_temperature(loss_fn),
                }
                if log_file:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                stats["final_loss"] = record["loss"]
                window_t, window_n, recent = now, 0, []
    finally:
        if log_file:
            log_file.close()
    elapsed = time.perf_counter() - t0
    stats.update(loss_temperature(loss_fn))
    stats["train_time_s"] = elapsed
    stats["samples_per_s"] = steps * batch / max(elapsed, 1e-9)
    return stats
