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

Scale (``GradCacheStep``): with ``train.micro_batch: M`` below the batch, and/or inside a
``torch.distributed`` group of W > 1 data-parallel workers (``resources.workers_per_job``), a step
runs in two stages. (1) Embed the (per-worker) batch in chunks of M without graph, make the raw
features leaves, and call the loss once on the whole batch (gathered across workers by the loss /
``gather_batch``), with every declared extra; back-propagate it to the leaves (the loss's own
parameters get their gradients here). (2) Re-embed each chunk with graph, the torch RNG state
replayed as it was in stage (1), and back-propagate the cached leaf gradients through it. With one
chunk the stage-(1) graph is kept and nothing is re-embedded. Without either option the step is
the plain one, op for op.
"""

from __future__ import annotations

import contextlib
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
from harness.diagnostics import TrainingDiagnostics
from harness.distributed import world
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
    from harness.distributed import gather_batch

    images, captions, negatives = batch
    with autocast(precision, device):
        fx, fy, raw_x, raw_y = encode_pair_batch_raw(encoder, images, captions, device, train=True)
        neg = encode_negatives(encoder, negatives, device) if "text_negatives" in extras else None
    available = {"step": step, "total_steps": steps, "image_raw": raw_x, "text_raw": raw_y, "text_negatives": neg}
    kwargs = {name: available[name] for name in extras}
    return fx, fy, gather_batch(kwargs)


def refuse_batch_norm(model: torch.nn.Module, why: str) -> None:
    """``ValueError`` (one line) if ``model`` has a batch-norm layer in train mode.

    Its statistics would be those of a chunk or of one worker's shard, not of the batch, so the
    step would no longer compute the one-process, whole-batch gradient.
    """
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"{why} cannot train a tower with batch norm in train mode ({name or 'model'}: "
                f"{type(module).__name__}): its statistics would be per chunk or per worker, not the batch's; "
                f"freeze the batch norm (e.g. freeze: image) or train without it"
            )


class RandState:
    """The torch RNG state (CPU, and the CUDA device's) at construction; ``restore()`` puts it back.

    GradCache's ``RandContext``: a chunk re-embedded with graph then draws the very dropout masks
    (and any other randomness) it drew when it was embedded without graph.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


class Towers(torch.nn.Module):
    """The encoder's two towers (and the text tower on hard negatives) as one module's ``forward``.

    ``forward(x, y, negatives=None)`` returns the raw (not normalised) float32 features of each
    input, the last ``None`` without negatives. Its parameters are ``encoder.model``'s, so it can
    be wrapped in ``DistributedDataParallel``, whose gradient averaging hooks need the forward to
    run through the wrapper.
    """

    def __init__(self, encoder) -> None:
        super().__init__()
        self.model = encoder.model
        self._encoder = [encoder]  # not a submodule: the encoder is no nn.Module

    def forward(self, x: torch.Tensor, y: torch.Tensor, negatives: torch.Tensor | None = None):
        encoder = self._encoder[0]
        raw_x = encoder.encode_image(x).float()
        raw_y = encoder.encode_pair(y).float()
        raw_n = encoder.encode_pair(negatives).float() if negatives is not None else None
        return raw_x, raw_y, raw_n


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """This process's peak memory from construction to ``read()``, for a result's ``env``.

    CPU: the resident set's high-water mark (``VmHWM``), reset at construction where Linux allows
    it, so it is this job's peak; otherwise it is the process's lifetime peak (``ru_maxrss``).
    CUDA: the caching allocator's peak of allocated bytes on the device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset = reset_peak_rss()
        self.start = _proc_status_bytes("VmRSS")
        self.cuda_start = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.cuda_start = torch.cuda.memory_allocated(device)

    def read(self, workers: int = 1) -> dict[str, Any]:
        out: dict[str, Any] = {}
        peak = _proc_status_bytes("VmHWM") if self.reset else None
        if peak is None:
            import resource
            import sys

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss if sys.platform == "darwin" else maxrss * 1024
        out["peak_rss_mb"] = round(peak / 2**20, 1)
        out["peak_rss_scope"] = "train" if self.reset else "process"
        if self.reset and self.start is not None:
            out["peak_rss_above_start_mb"] = round(max(0, peak - self.start) / 2**20, 1)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            out["cuda_peak_mb"] = round(peak / 2**20, 1)
            out["cuda_peak_above_start_mb"] = round(max(0, peak - self.cuda_start) / 2**20, 1)
        if workers > 1:
            import torch.distributed as dist

            every: list[Any] = [None] * workers
            dist.all_gather_object(every, {k: out[k] for k in ("peak_rss_mb", "cuda_peak_mb") if k in out})
            for key in ("peak_rss_mb", "cuda_peak_mb"):
                if key in out:
                    out[f"{key}_per_worker"] = [e[key] for e in every]
        return out


class GradCacheStep:
    """One optimizer step's gradients in two stages (see the module docstring).

    ``micro``: pairs per chunk (the whole per-worker batch for one chunk). In a group of W
    workers every worker reads and preprocesses the whole batch (the same data and augmentation
    draws as one process would) and embeds its rows ``rank * b : (rank + 1) * b``. The loss sees
    the global batch (the built-in losses gather their inputs; ``gather_batch`` the batch-shaped
    extras), with only this worker's shard in the graph, so its leaf gradients are this shard's
    part of the whole-batch gradient. DDP then *averages* the workers' tower gradients: the
    cached gradients are multiplied by W first, so the average is their sum, the one-process
    gradient. The loss's own parameters already get the whole gradient on every worker (their
    graph is the whole loss); their gradients are averaged too (equal values, so unchanged).
    """

    def __init__(self, encoder, loss_fn: torch.nn.Module, device: torch.device, precision: str,
                 extras: tuple[str, ...], micro: int, scaler, loss_name: str) -> None:
        self.encoder, self.loss_fn, self.device, self.precision = encoder, loss_fn, device, precision
        self.extras, self.micro, self.scaler, self.loss_name = extras, micro, scaler, loss_name
        self.rank, self.world = world()
        self.towers = Towers(encoder)
        self.forward = self.towers
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            import inspect

            # no buffer sync at each forward: batch norm is refused and every rank's buffers are equal
            quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                     else {"broadcast_buffers": False})
            self.forward = DistributedDataParallel(
                self.towers, device_ids=[device.index] if device.type == "cuda" else None, **quiet)
        self.loss_params = [p for p in loss_fn.parameters() if p.requires_grad]

    def inputs(self, data, n: int):
        """This worker's rows of the batch as model input: ``(x, y, negative tokens or None, K)``."""
        images, captions, negatives = data
        b = n // self.world
        rows = slice(self.rank * b, (self.rank + 1) * b)
        with autocast(self.precision, self.device):
            x = self.encoder.preprocess_images(images, train=True).to(self.device, non_blocking=True)
            y = self.encoder.pair_inputs(images, captions, train=True).to(self.device, non_blocking=True)
        if self.world > 1:
            x, y = x[rows], y[rows]
        tokens, k = None, 0
        if "text_negatives" in self.extras:
            mine = negatives[rows]
            k = len(mine[0]) if mine else 0
            if not mine or k == 0 or any(len(row) != k for row in mine):
                raise ValueError("the dataset's hard negatives must be N lists of the same number K >= 1 of captions")
            tokens = self.encoder.tokenize([c for row in mine for c in row]).to(self.device, non_blocking=True)
        return x, y, tokens, k

    def run(self, data, n: int, step: int, steps: int, opt: torch.optim.Optimizer) -> tuple[dict, torch.Tensor]:
        """Leave this step's gradients in ``.grad`` (scaled by the GradScaler, if any); return
        ``(terms, total)``. Raises ``NonFiniteLoss`` before any backward when the loss is not finite."""
        x, y, tokens, k = self.inputs(data, n)
        rows = x.shape[0]
        bounds = [(s, min(s + self.micro, rows)) for s in range(0, rows, self.micro)]
        chunks = [(x[s:e], y[s:e], tokens[s * k : e * k] if tokens is not None else None) for s, e in bounds]
        states: list[RandState] = []
        if len(chunks) == 1:  # keep the graph: nothing is embedded twice
            with autocast(self.precision, self.device):
                kept = self.forward(*chunks[0])
            outs = [o.detach() if o is not None else None for o in kept]
        else:
            kept, outs = None, []
            with torch.no_grad():
                parts = []
                for chunk in chunks:
                    states.append(RandState(self.device))
                    with autocast(self.precision, self.device):
                        parts.append(self.towers(*chunk))
            outs = [torch.cat([p[i] for p in parts]) if parts[0][i] is not None else None for i in range(3)]
            del parts
        leaves = [o.requires_grad_() if o is not None else None for o in outs]
        raw_x, raw_y, raw_n = leaves
        fx, fy = F.normalize(raw_x, dim=-1), F.normalize(raw_y, dim=-1)
        neg = F.normalize(raw_n, dim=-1).view(rows, k, -1) if raw_n is not None else None
        available = {"step": step, "total_steps": steps, "image_raw": raw_x, "text_raw": raw_y, "text_negatives": neg}
        from harness.distributed import gather_batch

        from harness.distributed import gather_count

        kwargs = gather_batch({name: available[name] for name in self.extras})
        gathered = gather_count()
        terms = check_terms(self.loss_fn(fx, fy, **kwargs), self.loss_name)
        if self.world > 1 and gather_count() == gathered:
            raise ValueError(
                f"loss {self.loss_name!r} does not gather its inputs across workers (harness.gather_features): "
                f"with {self.world} workers it would see {rows} pairs of each batch of {n}; gather them, or set "
                f"resources.workers_per_job: 1")
        total = sum(terms.values())
        check_finite(total, terms, step, steps)
        opt.zero_grad(set_to_none=True)
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        grads = [leaf.grad if leaf is not None else None for leaf in leaves]
        if self.world > 1:
            for g in grads:
                if g is not None:
                    g.mul_(self.world)
            self._average_loss_grads()
        for i, (s, e) in enumerate(bounds):
            if kept is None:
                last = i == len(bounds) - 1
                sync = contextlib.nullcontext() if last or self.world == 1 else self.forward.no_sync()
                with sync:
                    states[i].restore()
                    with autocast(self.precision, self.device):
                        out = self.forward(*chunks[i])
                    self._backward(out, grads, s, e, k)
            else:
                self._backward(kept, grads, s, e, k)
        return terms, total

    @staticmethod
    def _backward(out, grads, s: int, e: int, k: int) -> None:
        pairs = [(o, g[s * k : e * k] if i == 2 else g[s:e]) for i, (o, g) in enumerate(zip(out, grads))
                 if o is not None and g is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])

    def _average_loss_grads(self) -> None:
        import torch.distributed as dist

        for p in self.loss_params:
            if p.grad is None:
                continue
            dist.all_reduce(p.grad)
            p.grad.div_(self.world)


def check_finite(total: torch.Tensor, terms: dict[str, torch.Tensor], step: int, steps: int) -> None:
    if not torch.isfinite(total):
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise NonFiniteLoss(f"loss is {float(total.detach())} at step {step + 1} of {steps} ({shown})")


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

    rank, workers = world()
    if batch % workers:
        raise ValueError(f"a batch of {batch} pairs (train.batch_size, or the dataset's {n} pairs if fewer) cannot be "
                         f"split evenly over {workers} workers")
    per_worker = batch // workers
    micro = cfg.micro_batch if cfg.micro_batch is not None and cfg.micro_batch < per_worker else None
    stats["env"] = {"workers_per_job": workers, "micro_batch": micro}
    memory = PeakMemory(device)
    log_file = open(log_path, "a") if log_path else None
    model.train()
    loss_fn.train()
    cached = None
    if micro is not None or workers > 1:
        refuse_batch_norm(model, f"train.micro_batch {micro}" if micro is not None else f"{workers} workers")
        cached = GradCacheStep(encoder, loss_fn, device, precision, extras, micro or per_worker, scaler, loss_name)
    diagnostics = TrainingDiagnostics(pairs, encoder, device, precision, steps, seed, enabled=rank == 0)
    diagnostics.probe(0, log_file)
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
            diagnostics.after_batch()
            if cached is not None:
                terms, total = cached.run(data, len(idx), step, steps, opt)
                if scaler is not None:
                    scaler.unscale_(opt)
            else:
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
                    **diagnostics.window_record(),
                }
                if log_file:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                stats["final_loss"] = record["loss"]
                window_t, window_n, recent = now, 0, []
            before = diagnostics.seconds
            diagnostics.probe(step + 1, log_file)
            t0 += diagnostics.seconds - before  # probing is not training time
            window_t += diagnostics.seconds - before
    finally:
        if log_file:
            log_file.close()
    elapsed = time.perf_counter() - t0
    stats["env"].update(memory.read(workers))
    stats.update(loss_temperature(loss_fn))
    stats.update(diagnostics.summary())
    stats["train_time_s"] = elapsed
    stats["samples_per_s"] = steps * batch / max(elapsed, 1e-9)
    return stats
