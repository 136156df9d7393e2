"""The loss contract (``harness.types.Loss``) as named rules, and ``check_loss`` that runs them all.

Each rule builds nothing: it takes a built loss (and optionally its ``PluginInfo``), calls it on
small seeded batches and raises ``AssertionError`` naming the violation. Rules that call the loss
run on CPU, and on CUDA too when a GPU is present; they call its ``setup(DATASET_SIZE)`` first when
it has one, as the trainer does, and feed it ``BATCHES`` different batches in turn (a stateful loss
carries its state from one to the next). Every declared extra is synthesised: ``index`` (rows of a
split of ``DATASET_SIZE`` pairs), ``caption_group`` (a few groups, some shared), the momentum
features (unit-norm, near the features, without gradient) and the others. A "fresh instance" is a
copy (``copy.deepcopy``) of the loss as the rule received it, before any call.
"""

from __future__ import annotations

import copy
import inspect
import io
from typing import Any, Callable

import torch
import torch.nn.functional as F

from harness.api import LOSS_EXTRAS, MOMENTUM_EXTRAS, one_line
from harness.registry import PluginInfo, declared_extras
from harness.testing._base import fail, guard, run_checks, subject
from harness.types import loss_momentum

N, D, K = 8, 16, 3  # batch, embedding dim, hard negatives per pair
DATASET_SIZE = 3 * N  # the training split a loss with setup() is sized for; index rows come from it
BATCHES = 2  # different batches fed in turn by the rules that call the loss


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


def loss_inputs(extras: tuple[str, ...], dtype: torch.dtype, device: torch.device, n: int = N, batch: int = 0) -> tuple:
    """Seeded (x, y, kwargs, leaves) of batch number ``batch``: unit-norm pairs with y near x, the
    given extras (``index``: n distinct rows of ``DATASET_SIZE``, so consecutive batches revisit
    rows; ``caption_group``: about n/3 groups; momentum features: unit-norm, near x and y, without
    gradient), and the grad leaves (the features and every extra in the graph)."""
    g = torch.Generator().manual_seed(batch)
    raw_x = 3 * torch.randn(n, D, generator=g, dtype=torch.float64)
    raw_y = raw_x + 1.5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    neg = F.normalize(torch.randn(n, K, D, generator=g, dtype=torch.float64), dim=-1)
    index = torch.randperm(DATASET_SIZE, generator=g)[:n]
    groups = torch.randint(0, max(2, n // 3), (n,), generator=g)
    mx = F.normalize(raw_x + torch.randn(n, D, generator=g, dtype=torch.float64), dim=-1)
    my = F.normalize(raw_y + torch.randn(n, D, generator=g, dtype=torch.float64), dim=-1)
    leaf = lambda t: t.to(device=device, dtype=dtype).detach().requires_grad_(True)  # noqa: E731
    x, y = leaf(F.normalize(raw_x, dim=-1)), leaf(F.normalize(raw_y, dim=-1))
    available = {"step": 3 + batch, "total_steps": 10, "image_raw": leaf(raw_x), "text_raw": leaf(raw_y),
                 "text_negatives": leaf(neg), "index": index.to(device), "caption_group": groups.to(device),
                 "image_momentum": mx.to(device=device, dtype=dtype), "text_momentum": my.to(device=device, dtype=dtype)}
    kwargs = {name: available[name] for name in extras}
    leaves = {"image_features": x, "text_features": y,
              **{k: v for k, v in kwargs.items() if torch.is_tensor(v) and v.requires_grad}}
    return x, y, kwargs, leaves


def prepare(loss: Any, what: str) -> Any:
    """``loss`` after its ``setup(DATASET_SIZE)``, when it has one (as the trainer calls it)."""
    setup = getattr(loss, "setup", None)
    if callable(setup):
        guard(what, f"setup({DATASET_SIZE})", lambda: setup(DATASET_SIZE))
    return loss


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


def _calls(loss, dtypes: tuple[torch.dtype, ...], what: str = "loss"):
    """(dtype, device, x, y, kwargs, leaves) for each device, dtype and batch, the loss set up once
    and moved to the device."""
    extras = _usable_extras(loss)
    prepare(loss, what)
    for device in _devices():
        if isinstance(loss, torch.nn.Module):
            loss.to(device)
        for dtype in dtypes:
            for batch in range(BATCHES):
                yield (dtype, device, *loss_inputs(extras, dtype, device, batch=batch))
    if isinstance(loss, torch.nn.Module):
        loss.to("cpu")


def _check_call(loss: Any, info: PluginInfo | None, dtype: torch.dtype) -> None:
    _, what = subject("loss", loss, info)
    for dtype, device, x, y, kwargs, _ in _calls(loss, (dtype,), what):
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
    """On seeded float32 batches with its extras: a non-empty dict of named scalar tensors."""
    _, what = subject("loss", loss, info)
    prepare(loss, what)
    for batch in range(BATCHES):
        x, y, kwargs, _ = loss_inputs(_usable_extras(loss), torch.float32, torch.device("cpu"), batch=batch)
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
    prepare(loss, what)
    for batch in range(BATCHES):
        x, y, kwargs, _ = loss_inputs(_usable_extras(loss), torch.bfloat16, torch.device("cpu"), batch=batch)
        for key, value in _call(loss, what, x, y, kwargs).items():
            if value.dtype not in (torch.float32, torch.float64) or not torch.isfinite(value).all():
                fail(what, f"on bfloat16 inputs term {key!r} must be finite and cast up to float32 (got {value.dtype})")


def check_loss_gradients(loss: Any, info: PluginInfo | None = None) -> None:
    """The terms are differentiable, with finite gradients reaching the embeddings it is given."""
    _, what = subject("loss", loss, info)
    for _, _, x, y, kwargs, leaves in _calls(loss, (torch.float32, torch.float64), what):
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
    for _, _, x, y, kwargs, leaves in _calls(loss, (torch.float32, torch.float64), what):
        inputs = {**{k: v for k, v in kwargs.items() if torch.is_tensor(v)}, **leaves}
        before = {k: v.detach().clone() for k, v in inputs.items()}
        total = sum(_call(loss, what, x, y, kwargs).values())
        if total.requires_grad:
            total.backward()
        for key, value in inputs.items():
            if not torch.equal(value.detach(), before[key]):
                fail(what, f"forward modified its input {key} in place")


def _same_terms(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    """The name of the first term that differs between ``a`` and ``b`` (to 1e-6), else None."""
    for key in a:
        if key not in b or not torch.allclose(a[key].detach(), b[key].detach(), rtol=1e-6, atol=1e-7, equal_nan=True):
            return key
    return None


def _fresh(loss: Any, what: str) -> Any:
    return guard(what, "copy.deepcopy (a fresh instance)", lambda: copy.deepcopy(loss))


def check_loss_deterministic(loss: Any, info: PluginInfo | None = None) -> None:
    """Two fresh instances fed the same sequence of batches give the same terms at every call (a
    stateful loss may change across calls; two of them given the same history may not differ)."""
    _, what = subject("loss", loss, info)
    extras = _usable_extras(loss)
    for device in _devices():
        for dtype in (torch.float32, torch.float64):
            a, b = (prepare(_fresh(loss, what), what) for _ in range(2))
            for batch in range(BATCHES):
                out = [_call(m.to(device) if isinstance(m, torch.nn.Module) else m, what,
                             *loss_inputs(extras, dtype, device, batch=batch)[:3]) for m in (a, b)]
                key = _same_terms(*out)
                if key is not None:
                    fail(what, f"not deterministic: term {key!r} differs between two fresh instances fed the same "
                               f"batches (call {batch + 1}, {dtype}, {device.type})")


def _saved(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` through ``torch.save`` / ``torch.load(weights_only=True)``, as a checkpoint keeps it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def check_loss_state_round_trip(loss: Any, info: PluginInfo | None = None) -> None:
    """Its state survives a checkpoint: after ``BATCHES`` batches, its ``state_dict`` (saved and
    loaded as a checkpoint does) loaded into a fresh instance after ``setup`` gives the same terms
    and the same state at the next batch. Catches state kept outside buffers and parameters."""
    _, what = subject("loss", loss, info)
    if not isinstance(loss, torch.nn.Module):
        return  # check_loss_is_module says it
    extras = _usable_extras(loss)
    fresh = _fresh(loss, what)
    prepare(loss, what)
    for batch in range(BATCHES):
        _call(loss, what, *loss_inputs(extras, torch.float32, torch.device("cpu"), batch=batch)[:3])
    state = guard(what, "torch.save of its state_dict()", lambda: _saved(loss.state_dict()))
    prepare(fresh, what)
    guard(what, "load_state_dict (of its own state_dict, into a fresh instance after setup)",
          lambda: fresh.load_state_dict(state))
    out = []
    with torch.random.fork_rng(devices=[]):  # the same random draws for both: the state is what is checked
        for m in (loss, fresh):
            torch.manual_seed(0)
            out.append(_call(m, what, *loss_inputs(extras, torch.float32, torch.device("cpu"), batch=BATCHES)[:3]))
    key = _same_terms(*out)
    if key is not None:
        fail(what, f"its state does not round-trip: after load_state_dict into a fresh instance, term {key!r} of "
                   f"the next batch differs (keep every value that changes forward in buffers or parameters)")
    mine, theirs = loss.state_dict(), fresh.state_dict()
    for key, value in mine.items():
        other = theirs.get(key)
        if not torch.is_tensor(value) or not torch.is_tensor(other) or value.shape != other.shape or not torch.equal(value, other):
            fail(what, f"its state does not round-trip: {key!r} differs after the next batch from a restored instance")


def check_loss_momentum(loss: Any, info: PluginInfo | None = None) -> None:
    """A ``momentum`` attribute (it asks the trainer for momentum towers) is a float in (0, 1), and a
    loss that declares ``image_momentum`` or ``text_momentum`` has one."""
    _, what = subject("loss", loss, info)
    try:
        momentum = loss_momentum(loss)
    except ValueError as exc:
        fail(what, one_line(exc))
    wanted = [name for name in declared_extras(loss) if name in MOMENTUM_EXTRAS]
    if wanted and momentum is None:
        fail(what, f"declares {wanted[0]!r} but has no momentum attribute (a float in (0, 1), the EMA rate)")


def check_loss_batch_of_one(loss: Any, info: PluginInfo | None = None) -> None:
    """A batch of one pair gives finite terms, or ``ValueError`` where the loss is undefined (never NaN)."""
    _, what = subject("loss", loss, info)
    prepare(loss, what)
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
    check_loss_state_round_trip,
    check_loss_momentum,
)


def check_loss(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check a loss plugin against the contract (``harness.types.Loss``); None when it fits.

    ``name_or_factory`` is a registered name (params as keywords) or the factory itself (params
    validated as the registry does). Every rule of ``LOSS_CHECKS`` runs, each on a freshly built
    loss; the ``AssertionError`` (a ``ChecksFailed``) lists every violated rule, one line each.
    """
    run_checks(LOSS_CHECKS, "loss", name_or_factory, params)
