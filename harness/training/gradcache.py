"""The step at scale: GradCache chunks (``train.micro_batch``) and data-parallel workers.

With ``train.micro_batch: M`` below the batch, and/or inside a ``torch.distributed`` group of
W > 1 data-parallel workers (``resources.workers_per_job``), a step runs in two stages. (1) Embed
the (per-worker) batch in chunks of M without graph, make the raw features leaves, and call the
loss once on the whole batch (gathered across workers by the loss / ``gather_batch``), with every
declared extra; back-propagate it to the leaves (the loss's own parameters get their gradients
here). (2) Re-embed each chunk with graph, the torch RNG state replayed as it was in stage (1),
and back-propagate the cached leaf gradients through it; then the RNG goes back to where it was
after the loss, so the loss's own random draws advance the stream as they do without chunks. With
one chunk the stage-(1) graph is kept and nothing is re-embedded. Without either option the step
is ``PlainStep``. Every extra is served: ``index`` and ``caption_group`` are this worker's rows of
the batch's tensors, the momentum towers' features are computed chunk by chunk without graph
after stage (1), and all of them are gathered across workers like the features.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F

from harness.distributed import gather_count, world
from harness.precision import autocast
from harness.training.inputs import Batch, batch_rows, loss_kwargs, model_inputs, negative_tokens
from harness.training.state import RandState
from harness.training.step import Step

Raw = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]  # raw image, pair and negatives features


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


def data_parallel(towers: Towers, device: torch.device) -> torch.nn.Module:
    """``towers`` in ``DistributedDataParallel``, without a buffer sync at each forward (batch norm
    is refused and every rank's buffers are equal)."""
    from torch.nn.parallel import DistributedDataParallel

    quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
             else {"broadcast_buffers": False})
    return DistributedDataParallel(towers, device_ids=[device.index] if device.type == "cuda" else None, **quiet)


class GradCacheStep(Step):
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

    def __init__(self, *args, micro: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.micro = micro
        self.rank, self.world = world()
        self.towers = Towers(self.encoder)
        self.forward = data_parallel(self.towers, self.device) if self.world > 1 else self.towers
        self.loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]

    def __call__(self, batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = Batch(*batch)
        n = len(batch.images)
        x, y, tokens, k = self.inputs(batch, n)
        rows = x.shape[0]
        bounds = [(s, min(s + self.micro, rows)) for s in range(0, rows, self.micro)]
        chunks = [(x[s:e], y[s:e], tokens[s * k : e * k] if tokens is not None else None) for s, e in bounds]
        kept, raw, states = self._embed(chunks)
        extras = batch_rows(batch, self.device, self.shard(n))
        if self.ema is not None:
            extras.update(self.ema.features(chunks, self.extras, self.precision, self.device))
        leaves = [o.requires_grad_() if o is not None else None for o in raw]
        total, terms = self._loss(leaves, k, n, step, extras)
        self.backward(total)
        grads = self._leaf_grads(leaves)
        if kept is not None:
            self._backward(kept, grads, 0, rows, k)
        else:
            resume = RandState(self.device)  # after the loss's own draws: the stream goes on from here
            self._replay(chunks, bounds, states, grads, k)
            resume.restore()
        return total, terms

    def shard(self, n: int) -> slice:
        """This worker's rows of a batch of ``n`` pairs (all of them in one process)."""
        b = n // self.world
        return slice(self.rank * b, (self.rank + 1) * b)

    def inputs(self, batch: Batch, n: int):
        """This worker's rows of the batch as model input: ``(x, y, negative tokens or None, K)``."""
        rows = self.shard(n)
        with autocast(self.precision, self.device):
            x, y = model_inputs(self.encoder, batch.images, batch.captions, self.device)
        if self.world > 1:
            x, y = x[rows], y[rows]
        tokens, k = None, 0
        if "text_negatives" in self.extras:
            tokens, k = negative_tokens(self.encoder, batch.negatives[rows], self.device)
        return x, y, tokens, k

    def _embed(self, chunks) -> tuple[Raw | None, list, list[RandState]]:
        """Stage (1): ``(kept graph or None, raw features without graph, RNG state before each chunk)``."""
        if len(chunks) == 1:  # keep the graph: nothing is embedded twice
            with autocast(self.precision, self.device):
                kept = self.forward(*chunks[0])
            return kept, [o.detach() if o is not None else None for o in kept], []
        states, parts = [], []
        with torch.no_grad():
            for chunk in chunks:
                states.append(RandState(self.device))
                with autocast(self.precision, self.device):
                    parts.append(self.towers(*chunk))
        raw = [torch.cat([p[i] for p in parts]) if parts[0][i] is not None else None for i in range(3)]
        return None, raw, states

    def _loss(self, leaves, k: int, n: int, step: int, extras) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on the whole batch of leaf features (``extras``: this worker's rows of the other
        per-pair extras); ``ValueError`` when a multi-worker loss never gathered."""
        raw_x, raw_y, raw_n = leaves
        rows = raw_x.shape[0]
        fx, fy = F.normalize(raw_x, dim=-1), F.normalize(raw_y, dim=-1)
        neg = F.normalize(raw_n, dim=-1).view(rows, k, -1) if raw_n is not None else None
        kwargs = loss_kwargs(self.extras, step, self.steps, raw_x, raw_y, neg, **extras)
        gathered = gather_count()
        terms = self.terms(fx, fy, kwargs)
        if self.world > 1 and gather_count() == gathered:
            raise ValueError(
                f"loss {self.loss_name!r} does not gather its inputs across workers (harness.gather_features): "
                f"with {self.world} workers it would see {rows} pairs of each batch of {n}; gather them, or set "
                f"resources.workers_per_job: 1")
        return self.total(terms, step), terms

    def _leaf_grads(self, leaves) -> list[torch.Tensor | None]:
        """The cached gradients of the leaves, times W across workers (DDP averages); the loss's
        own gradients averaged across workers."""
        grads = [leaf.grad if leaf is not None else None for leaf in leaves]
        if self.world > 1:
            for g in grads:
                if g is not None:
                    g.mul_(self.world)
            self._average_loss_grads()
        return grads

    def _replay(self, chunks, bounds, states: list[RandState], grads, k: int) -> None:
        """Stage (2): each chunk re-embedded with graph from its stage-(1) RNG state, its cached
        gradients back-propagated; DDP syncs the tower gradients once, on the last chunk."""
        for i, (s, e) in enumerate(bounds):
            last = i == len(bounds) - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.forward.no_sync()
            with sync:
                states[i].restore()
                with autocast(self.precision, self.device):
                    out = self.forward(*chunks[i])
                self._backward(out, grads, s, e, k)

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
