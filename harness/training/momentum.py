"""Momentum towers (contract v3): EMA copies of both towers for a loss with a ``momentum`` attribute.

A loss whose ``momentum`` is a float in (0, 1) (``harness.types.loss_momentum``) makes the trainer
keep a deep copy of ``encoder.model`` (``new_ema``, held on ``LoopState.ema``), never trained,
updated after each optimizer step (``momentum_step``): every parameter p_ema = m p_ema + (1 - m) p
with m the loss's ``momentum`` read at that step (a frozen parameter, which never changes, is
copied as it is), every buffer copied. ``EmaTowers`` runs the encoder's own ``encode_image`` /
``encode_pair`` on the copy, in the online towers' train/eval modes (no switch to eval), under
``torch.no_grad()`` and the step's autocast, on the very inputs (augmentation included) the online
towers embed; the L2-normalised float32 results are the ``image_momentum`` and ``text_momentum``
extras. A loss without ``momentum`` gets none of this: no copy, no extra work, no random draw.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from harness.precision import autocast
from harness.types import MOMENTUM_EXTRAS, declared_extras, loss_momentum


def setup_loss(loss_fn: torch.nn.Module, dataset_size: int) -> None:
    """The loss's optional ``setup(dataset_size)``, called once before the first step and before any
    saved state is restored (contract v3)."""
    setup = getattr(loss_fn, "setup", None)
    if callable(setup):
        setup(dataset_size)


def new_ema(model: torch.nn.Module, loss_fn: torch.nn.Module) -> torch.nn.Module | None:
    """A frozen deep copy of ``model`` when the loss asks for momentum towers, else None.

    ``ValueError`` (one line) when the loss's ``momentum`` is not a float in (0, 1), or when it
    declares a momentum extra without a ``momentum``."""
    if loss_momentum(loss_fn) is None:
        wanted = [name for name in declared_extras(loss_fn) if name in MOMENTUM_EXTRAS]
        if wanted:
            raise ValueError(f"the loss declares {wanted[0]!r} but has no momentum attribute (a float in (0, 1), "
                             f"the EMA rate of the momentum towers)")
        return None
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, momentum: float) -> None:
    """p_ema = momentum * p_ema + (1 - momentum) * p for every trained parameter; frozen parameters
    and every buffer copied from ``model``."""
    pairs = list(zip(ema.parameters(), model.parameters()))
    trained = [(e, p.detach()) for e, p in pairs if p.requires_grad]
    if trained:
        averaged, online = [e for e, _ in trained], [p for _, p in trained]
        torch._foreach_mul_(averaged, momentum)
        torch._foreach_add_(averaged, online, alpha=1.0 - momentum)
    for e, p in pairs:
        if not p.requires_grad:
            e.copy_(p)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def momentum_step(ema: torch.nn.Module | None, step_fn) -> None:
    """After an optimizer step: the EMA towers follow the online ones at the loss's current ``momentum``."""
    if ema is None:
        return
    m = loss_momentum(step_fn.loss_fn)
    if m is None:
        raise ValueError(f"loss {step_fn.loss_name!r} lost its momentum attribute during training")
    ema_update(ema, step_fn.encoder.model, m)


def ema_view(encoder: Any, ema: torch.nn.Module) -> Any:
    """A shallow copy of ``encoder`` whose ``model`` (and any attribute holding one of its submodules,
    parameters or buffers) is the EMA copy's counterpart: its methods then run the EMA towers."""
    if isinstance(encoder, torch.nn.Module):
        raise ValueError("momentum towers need an encoder that holds its towers in its model attribute "
                         f"and is not itself an nn.Module ({type(encoder).__name__} is one)")
    online = encoder.model
    twin: dict[int, Any] = {id(online): ema}
    for name, module in online.named_modules():
        twin[id(module)] = ema.get_submodule(name)
    for name, tensor in list(online.named_parameters()) + list(online.named_buffers()):
        module, _, leaf = name.rpartition(".")
        twin[id(tensor)] = getattr(ema.get_submodule(module), leaf)
    view = copy.copy(encoder)
    for key, value in list(vars(view).items()):
        if id(value) in twin:
            setattr(view, key, twin[id(value)])
    return view


class EmaTowers:
    """The momentum towers as a step uses them: ``features`` of chunks of the towers' inputs."""

    def __init__(self, encoder: Any, ema: torch.nn.Module) -> None:
        self.online, self.module = encoder.model, ema
        self.encoder = ema_view(encoder, ema)

    @classmethod
    def of(cls, encoder: Any, ema: torch.nn.Module | None) -> EmaTowers | None:
        return cls(encoder, ema) if ema is not None else None

    def features(self, chunks, extras: tuple[str, ...], precision: str, device: torch.device) -> dict[str, torch.Tensor]:
        """``image_momentum`` / ``text_momentum`` (those ``extras`` declares): the EMA towers' L2-normalised
        float32 features of the (x, y) input ``chunks``, concatenated, without graph."""
        wanted = [name for name in MOMENTUM_EXTRAS if name in extras]
        if not wanted:
            return {}
        for mine, theirs in zip(self.module.modules(), self.online.modules()):
            mine.training = theirs.training
        encode = {"image_momentum": (self.encoder.encode_image, 0), "text_momentum": (self.encoder.encode_pair, 1)}
        out = {}
        with torch.no_grad(), autocast(precision, device):
            for name in wanted:
                fn, which = encode[name]
                raw = torch.cat([fn(chunk[which]).float() for chunk in chunks])
                out[name] = F.normalize(raw, dim=-1)
        return out
