"""``harness.api``, the public plugin API: its names, its layering, and the loss building blocks.

The built-ins import nothing from ``harness`` but ``harness.api`` (and their own modules); core
imports no built-in; ``harness.api`` sits below the registry. The helpers it re-exports
(``validate_params``, ``prepare_features``, ``register_scalar``, ``self_gram``...) are checked here
on their own.
"""

from __future__ import annotations

import ast
import inspect
import math
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import torch
from pydantic import Field

import harness
import harness.api as api
from harness import testing

ROOT = Path(harness.__file__).parent


def _harness_imports(path: Path) -> list[str]:
    """Every ``harness...`` module ``path`` imports, at top level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "harness"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            found.append(node.module if node.module != "harness" else f"harness.{node.names[0].name}")
    return found


# ------------------------------------------------------------------------------------------ names


def test_every_name_of_the_api_resolves_and_is_documented():
    doc = (ROOT.parent / "docs" / "writing-a-plugin.md").read_text()
    assert len(api.__all__) == len(set(api.__all__))
    for name in api.__all__:
        assert hasattr(api, name), name
        assert f"`{name}`" in doc, f"docs/writing-a-plugin.md does not describe harness.api.{name}"


def test_the_api_reexports_one_implementation_of_each_helper():
    from harness import distributed, lossutil, params, types

    assert api.MAX_LOGIT_SCALE == types.MAX_LOGIT_SCALE == math.log(100.0)
    assert api.gather_features is distributed.gather_features
    assert api.prepare_features is lossutil.prepare_features and api.bind_params is params.bind_params
    assert api.hookimpl is harness.hookimpl and api.Skip is harness.Skip


def test_builtins_import_only_the_public_api():
    files = sorted((ROOT / "builtin").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        for name in _harness_imports(path):
            assert name == "harness.api" or name.startswith("harness.builtin"), f"{path.relative_to(ROOT)} imports {name}"


def test_core_imports_no_builtin_and_the_api_nothing_above_it():
    for path in sorted(ROOT.rglob("*.py")):
        if "builtin" in path.relative_to(ROOT).parts:
            continue
        for name in _harness_imports(path):
            assert not name.startswith("harness.builtin"), f"{path.relative_to(ROOT)} imports {name}"
    below = {"harness.errors", "harness.types", "harness.precision", "harness.params", "harness.distributed",
             "harness.lossutil", "harness.hookspecs", "harness.metrics.gap"}
    for module in ("api.py", "lossutil.py"):
        assert set(_harness_imports(ROOT / module)) <= below, module


def test_importing_harness_or_its_api_loads_no_plugin_and_no_registry():
    code = (
        "import sys, harness, harness.api\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('harness.builtin', 'harness.registry')))\n"
        "assert not bad, bad\n"
        "assert harness.create_loss('clip').__class__.__name__ == 'ClipLoss'\n"  # lazily, on first use
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_no_module_of_the_author_kit_exceeds_450_lines():
    for path in [ROOT / "api.py", ROOT / "lossutil.py", ROOT / "registry.py", *sorted((ROOT / "testing").glob("*.py"))]:
        assert len(path.read_text().splitlines()) <= 450, path


def test_every_rule_is_public_and_run_by_its_kind():
    for kind, checks in testing.CHECKS.items():
        prefix = f"check_{kind}_"
        module = sys.modules[checks[0].__module__]
        defined = [n for n in vars(module) if n.startswith(prefix)]
        assert sorted(c.__name__ for c in checks) == sorted(defined), kind
        for check in checks:
            assert getattr(testing, check.__name__) is check and check.__name__ in testing.__all__
            assert check.__doc__, check.__name__


# ------------------------------------------------------------------------------- validate_params


class Scaled(torch.nn.Module):
    def __init__(self, scale: Annotated[float, Field(gt=0, le=10, description="s")] = 1.0,
                 learn: Annotated[bool, Field(strict=True)] = False, free=None):
        super().__init__()
        p = api.validate_params(Scaled.__init__, {"scale": scale, "learn": learn, "free": free})
        self.scale, self.learn = p["scale"], p["learn"]


def test_validate_params_checks_a_directly_built_plugin_like_the_registry():
    assert Scaled(scale=2).scale == 2.0 and isinstance(Scaled(scale=2).scale, float)  # coerced
    with pytest.raises(ValueError, match=r"^scale: Input should be greater than 0 \(got -1\)$"):
        Scaled(scale=-1)
    with pytest.raises(ValueError, match="^learn: Input should be a valid boolean"):
        Scaled(learn="maybe")
    with pytest.raises(ValueError, match="^scale: "):
        Scaled(scale=True)  # a bool is not a float here
    with pytest.raises(ValueError, match="^scale: "):
        Scaled(scale=float("nan"))
    assert api.validate_params(Scaled, {"free": object}) == {"free": object}  # unannotated: passes


# ---------------------------------------------------------------------------- loss building blocks


def test_prepare_features_checks_and_casts_up():
    x = torch.randn(4, 3, dtype=torch.bfloat16)
    a, b = api.prepare_features(x, x.half())
    assert a.dtype == b.dtype == torch.float32
    a, b = api.prepare_features(x.double(), x.float())
    assert a.dtype == b.dtype == torch.float64
    with pytest.raises(ValueError, match=r"must both be \(N, d\) with the same shape, got \(4, 3\) and \(3, 3\)"):
        api.prepare_features(x, x[:3])
    with pytest.raises(ValueError, match="the batch is empty"):
        api.prepare_features(x[:0], x[:0])
    with pytest.raises(ValueError, match="must be tensors"):
        api.prepare_features([1.0], x)
    with pytest.raises(ValueError, match="^mine is undefined for a batch of 1: it needs negatives, so it needs at least 2$"):
        api.prepare_features(x[:1], x[:1], "mine", at_least=2)


def test_full_precision_turns_autocast_off_and_passes_extras():
    class Loss(torch.nn.Module):
        @api.full_precision
        def forward(self, image_features, text_features, *, step):
            return {"dot": (image_features @ text_features.T).sum() * step, "enabled": torch.is_autocast_enabled("cpu")}

    x = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Loss()(x, x, step=2)
    assert out["dot"].dtype == torch.float32 and out["enabled"] is False
    assert list(inspect.signature(Loss().forward).parameters) == ["image_features", "text_features", "step"]


def test_register_scalar_and_the_logit_scale_clamp():
    m = torch.nn.Module()
    api.register_scalar(m, "logit_scale", math.log(1 / 0.07), learnable=True)
    api.register_scalar(m, "logit_bias", -10)
    assert isinstance(m.logit_scale, torch.nn.Parameter) and m.logit_scale.dtype == torch.float32
    assert "logit_bias" in dict(m.named_buffers()) and set(m.state_dict()) == {"logit_scale", "logit_bias"}
    assert float(api.clamp_logit_scale(torch.tensor(9.0))) == pytest.approx(api.MAX_LOGIT_SCALE)
    assert float(api.clamp_logit_scale(torch.tensor(1.0))) == 1.0


def test_self_gram_gradients():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 5, dtype=torch.float64)  # an asymmetric consumer: self_gram is exact
    (grad,) = torch.autograd.grad((api.self_gram(x) * w).sum(), x)
    (want,) = torch.autograd.grad(((x @ x.T) * w).sum(), x)
    torch.testing.assert_close(grad, want)
    sym = w + w.T  # a symmetric consumer: symmetric_self_gram is exact too
    (grad,) = torch.autograd.grad((api.symmetric_self_gram(x) * sym).sum(), x)
    (want,) = torch.autograd.grad(((x @ x.T) * sym).sum(), x)
    torch.testing.assert_close(grad, want)
    assert torch.autograd.gradcheck(api.self_gram, (x,))
