"""The loss contract (``harness.types.Loss``) as named rules, and ``check_loss`` that runs them all.

Each rule builds nothing: it takes a built loss (and optionally its ``PluginInfo``), calls it on
small seeded batches and raises ``AssertionError`` naming the violation. Rules that call the loss
run on CPU, and on CUDA too when a GPU is present.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F

from harness.api import LOSS_EXTRAS, one_line
from harness.registry import PluginInfo, declared_extras
from harness.testing._base import fail, run_checks, subject

N, D, K = 8, 16, 3  # batch, embedding dim, hard negatives per pair


def _devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _usable_extras(loss: Any) -> tuple[str, ...]:
    """The declared extras a call can pass: known ones that ``forward`` accepts (the others are
    ``check_loss_declares_known_extras``' business, so that one mistake fails one rule)."""
    try:
        sig = inspect.signature(loss.forward)
    except (AttributeError, TypeError, ValueError):
        return ()
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return tuple(dict.fromkeys(n for n in declared_extras(loss) if n in LOSS_EXTRAS and (takes_any or n in sig.parameters)))


def loss_inputs(extras: tuple[str, ...], dtype: torch.dtype, device: torch.device, n: int = N) -> tuple:
    """Seeded (x, y, kwargs, leaves): unit-norm pairs with y near x, the given extras, grad leaves."""
    g = torch.Generator().manual_seed(0)
    raw_x = 3 * torch.randn(n, D, generator=g, dtype=torch.float64)
    raw_y = raw_x + 1.5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    neg = F.normalize(torch.randn(n, K, D, generator=g, dtype=torch.float64), dim=-1)
    leaf = lambda t: t.to(device=device, dtype=dtype).detach().requires_grad_(True)  # noqa: E731
    x, y = leaf(F.normalize(raw_x, dim=-1)), leaf(F.normalize(raw_y, dim=-1))
    available = {"step": 3, "total_steps": 10, "image_raw": leaf(raw_x), "text_raw": leaf(raw_y),
                 "text_negatives": leaf(neg)}
    kwargs = {name: available[name] for name in extras}
    leaves = {"image_features": x, "text_features": y, **{k: v for k, v in kwargs.items() if torch.is_tensor(v)}}
    return x, y, kwargs, leaves


def _terms(what: str, out: Any) -> dict[str, torch.Tensor]:
    if not isinstance(out, dict) or not out:
        fail(what, f"forward must return a non-empty dict of named scalar terms, got {type(out).__name__}"
                   + (" (empty)" if isinstance(out, dict) else ""))
    for key, value in out.items():
        if not isinstance(key, str) or not key:
            fail(what, f"term names must be non-empty strings, got {key!r}")
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            fail(what, f"term {key!r} must be a scalar tensor, got {got}")
    return out


def _call(loss, what: str, x, y, kwargs) -> dict[str, torch.Tensor]:
    try:
        return _terms(what, loss(x, y, **kwargs))
    except AssertionError:
        raise
    except Exception as exc:
        fail(what, f"forward raised {one_line(exc)} on a valid batch of {x.shape[0]} pairs "
                   f"(dtype {x.dtype}, extras: {', '.join(kwargs) or 'none'})")


def _calls(loss, dtypes: tuple[torch.dtype, ...]):
    """(dtype, device, x, y, kwargs, leaves) for each device and dtype, the loss moved to the device."""
    extras = _usable_extras(loss)
    for device in _devices():
        if isinstance(loss, torch.nn.Module):
            loss.to(device)
        for dtype in dtypes:
            yield (dtype, device, *loss_inputs(extras, dtype, device))
    if isinstance(loss, torch.nn.Module):
        loss.to("cpu")


def _check_call(loss: Any, info: PluginInfo | None, dtype: torch.dtype) -> None:
    _, what = subject("loss", loss, info)
    for dtype, device, x, y, kwargs, _ in _calls(loss, (dtype,)):
        for key, value in _call(loss, what, x, y, kwargs).items():
            if not torch.isfinite(value).all():
                fail(what, f"term {key!r} is not finite ({float(value.detach())}) on a valid batch")
            if value.dtype != dtype:
                fail(what, f"term {key!r} is {value.dtype} for {dtype} inputs; keep the inputs' precision (cast up only half)")
            if value.device.type != device.type:
                fail(what, f"term {key!r} is on {value.device} for inputs on {device}")


# ------------------------------------------------------------------------------------------- rules


def check_loss_is_module(loss: Any, info: PluginInfo | None = None) -> None:
    """The factory returns a ``torch.nn.Module`` (so its scalars move, save and train with the model)."""
    _, what = subject("loss", loss, info)
    if not isinstance(loss, torch.nn.Module):
        fail(what, f"must be a torch.nn.Module, got {type(loss).__name__}")


def check_loss_declares_known_extras(loss: Any, info: PluginInfo | None = None) -> None:
    """Its ``extras`` are known names (``LOSS_EXTRAS``), each once, each accepted by ``forward``."""
    _, what = subject("loss", loss, info)
    extras = declared_extras(loss)
    for name in extras:
        if name not in LOSS_EXTRAS:
            fail(what, f"declares an unknown extra {name!r}; known extras: {', '.join(LOSS_EXTRAS)}")
    if len(set(extras)) != len(extras):
        fail(what, f"declares an extra twice: {list(extras)}")
    sig = inspect.signature(loss.forward)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for name in extras:
        if not takes_any and name not in sig.parameters:
            fail(what, f"declares the extra {name!r} but forward() does not accept it as a keyword argument")


def check_loss_returns_terms(loss: Any, info: PluginInfo | None = None) -> None:
    """On a seeded float32 batch with its extras: a non-empty dict of named scalar tensors."""
    _, what = subject("loss", loss, info)
    x, y, kwargs, _ = loss_inputs(_usable_extras(loss), torch.float32, torch.device("cpu"))
    _call(loss, what, x, y, kwargs)


def check_loss_float32(loss: Any, info: PluginInfo | None = None) -> None:
    """float32 inputs give finite float32 terms on the inputs' device."""
    _check_call(loss, info, torch.float32)


def check_loss_float64(loss: Any, info: PluginInfo | None = None) -> None:
    """float64 inputs give finite float64 terms (so a float64 reference can check it to 1e-9)."""
    _check_call(loss, info, torch.float64)


def check_loss_half_precision(loss: Any, info: PluginInfo | None = None) -> None:
    """bfloat16 inputs (as under autocast) give finite terms cast up to float32."""
    _, what = subject("loss", loss, info)
    x, y, kwargs, _ = loss_inputs(_usable_extras(loss), torch.bfloat16, torch.device("cpu"))
    for key, value in _call(loss, what, x, y, kwargs).items():
        if value.dtype not in (torch.float32, torch.float64) or not torch.isfinite(value).all():
            fail(what, f"on bfloat16 inputs term {key!r} must be finite and cast up to float32 (got {value.dtype})")


def check_loss_gradients(loss: Any, info: PluginInfo | None = None) -> None:
    """The terms are differentiable, with finite gradients reaching the embeddings it is given."""
    _, what = subject("loss", loss, info)
    for _, _, x, y, kwargs, leaves in _calls(loss, (torch.float32, torch.float64)):
        total = sum(_call(loss, what, x, y, kwargs).values())
        if not total.requires_grad:
            fail(what, "the terms do not depend on the inputs (no gradient)")
        total.backward()
        for key, value in leaves.items():
            if value.grad is not None and not torch.isfinite(value.grad).all():
                fail(what, f"the gradient of {key} is not finite")
        if not any(v.grad is not None and bool((v.grad != 0).any()) for v in leaves.values()):
            fail(what, "no gradient reaches the embeddings it is given")


def check_loss_inputs_unchanged(loss: Any, info: PluginInfo | None = None) -> None:
    """``forward`` (and its backward) leaves its inputs as they were: nothing in place."""
    _, what = subject("loss", loss, info)
    for _, _, x, y, kwargs, leaves in _calls(loss, (torch.float32, torch.float64)):
        before = {k: v.detach().clone() for k, v in leaves.items()}
        total = sum(_call(loss, what, x, y, kwargs).values())
        if total.requires_grad:
            total.backward()
        for key, value in leaves.items():
            if not torch.equal(value.detach(), before[key]):
                fail(what, f"forward modified its input {key} in place")


def check_loss_deterministic(loss: Any, info: PluginInfo | None = None) -> None:
    """Two calls on the same inputs give the same terms."""
    _, what = subject("loss", loss, info)
    extras = _usable_extras(loss)
    for dtype, device, x, y, kwargs, _ in _calls(loss, (torch.float32, torch.float64)):
        out = _call(loss, what, x, y, kwargs)
        again = _call(loss, what, *loss_inputs(extras, dtype, device)[:3])
        for key in out:
            if key not in again or not torch.allclose(out[key].detach(), again[key].detach(), rtol=1e-6, atol=1e-7, equal_nan=True):
                fail(what, f"not deterministic: term {key!r} differs between two calls on the same inputs")


def check_loss_batch_of_one(loss: Any, info: PluginInfo | None = None) -> None:
    """A batch of one pair gives finite terms, or ``ValueError`` where the loss is undefined (never NaN)."""
    _, what = subject("loss", loss, info)
    x, y, kwargs, _ = loss_inputs(_usable_extras(loss), torch.float32, torch.device("cpu"), n=1)
    try:
        out = _terms(what, loss(x, y, **kwargs))
    except ValueError:
        return  # undefined for one pair, said with ValueError: as the contract asks
    except AssertionError:
        raise
    except Exception as exc:
        fail(what, f"a batch of one must give finite terms or raise ValueError, got {one_line(exc)}")
    if not all(torch.isfinite(v).all() for v in out.values()):
        fail(what, "a batch of one gives non-finite terms; raise ValueError where the loss is undefined")


LOSS_CHECKS: tuple[Callable[..., None], ...] = (
    check_loss_is_module,
    check_loss_declares_known_extras,
    check_loss_returns_terms,
    check_loss_float32,
    check_loss_float64,
    check_loss_half_precision,
    check_loss_gradients,
    check_loss_inputs_unchanged,
    check_loss_deterministic,
    check_loss_batch_of_one,
)


def check_loss(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check a loss plugin against the contract (``harness.types.Loss``); None when it fits.

    ``name_or_factory`` is a registered name (params as keywords) or the factory itself (params
    validated as the registry does). Every rule of ``LOSS_CHECKS`` runs, each on a freshly built
    loss; the ``AssertionError`` (a ``ChecksFailed``) lists every violated rule, one line each.
    """
    run_checks(LOSS_CHECKS, "loss", name_or_factory, params)
