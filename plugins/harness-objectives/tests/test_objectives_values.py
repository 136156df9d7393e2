"""Each loss against an independent float64 transcription of its reference formula, and its gradients."""

import pytest
import torch

import harness
import objectives_reference as ref
from objectives_helpers import NAMES, SHAPES, inputs_for, total

#: non-default settings, checked as well as the defaults (hn_nce's alpha = 0 is the decoupled variant)
PARAMS = {
    "cloob": {"inv_tau": 14.3, "hopfield_scale": 14.3},
    "dhel": {"temperature": 0.1},
    "hn_nce": {"temperature": 0.1, "alpha": 0.0, "beta": 1.0},
    "ifm": {"temperature": 0.2, "epsilon": 0.05, "alpha": 0.5},
    "vicreg": {"sim_weight": 1.0, "var_weight": 2.0, "cov_weight": 3.0},
    "barlow_twins": {"off_diagonal_weight": 0.1},
    "clip_cosine_temperature": {"temperature_min": 0.05, "temperature_max": 0.5, "period_steps": 100},
    "negclip": {"temperature": 0.1, "learnable_temperature": False},
}


def reference_value(name, x, y, extras, params):
    """The reference's loss for the inputs the harness hands ``name`` (defaults = the papers')."""
    if name == "vicreg":
        return ref.vicreg(extras["image_raw"], extras["text_raw"], **params)
    if name == "barlow_twins":
        return ref.barlow_twins(extras["image_raw"], extras["text_raw"], **params)
    if name == "clip_cosine_temperature":
        return ref.clip_cosine_temperature(x, y, extras["step"], **params)
    if name == "negclip":
        params = {k: v for k, v in params.items() if k != "learnable_temperature"}
        return ref.negclip(x, y, extras["text_negatives"], **params)
    return getattr(ref, name)(x, y, **params)


def relative_error(got, want):
    got, want = float(got.detach()), float(want.detach())
    return abs(got - want) / max(abs(want), 1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-d{s[1]}")
@pytest.mark.parametrize("setting", ["defaults", "params"])
@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_reference(name, setting, shape):
    params = PARAMS[name] if setting == "params" else {}
    x, y, extras = inputs_for(name, *shape, seed=100 * NAMES.index(name) + SHAPES.index(shape))
    got = total(harness.create_loss(name, **params)(x, y, **extras))
    assert got.dtype == torch.float64
    want = reference_value(name, x, y, extras, params)
    # negclip's logit_scale is a float32 nn.Parameter (as CLIP's): log(1/t) rounded to ~1e-8
    assert relative_error(got, want) < (1e-6 if name == "negclip" else 1e-9), (float(got.detach()), float(want))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-d{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_float32_within_1e5_of_float64_reference(name, shape):
    """The check the issue names: float32 inputs, compared with float64 on the same (rounded) values."""
    x, y, extras = inputs_for(name, *shape, seed=7, dtype=torch.float32)
    got = total(harness.create_loss(name)(x, y, **extras))
    assert got.dtype == torch.float32
    as64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in extras.items()}
    want = reference_value(name, x.double(), y.double(), as64, {})
    assert relative_error(got, want) < 1e-5, (float(got.detach()), float(want))


def _tensor_inputs(name, n, d, seed):
    x, y, extras = inputs_for(name, n, d, seed=seed)
    tensors = {"x": x, "y": y, **{k: v for k, v in extras.items() if isinstance(v, torch.Tensor)}}
    plain = {k: v for k, v in extras.items() if not isinstance(v, torch.Tensor)}
    return {k: v.clone().requires_grad_(True) for k, v in tensors.items()}, plain


def _call(loss, tensors, plain):
    extras = {k: v for k, v in tensors.items() if k not in ("x", "y")}
    return total(loss(tensors["x"], tensors["y"], **extras, **plain))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_reference(name):
    """Autograd through the loss equals autograd through the loop transcription (float64)."""
    tensors, plain = _tensor_inputs(name, 5, 8, seed=3)
    loss = harness.create_loss(name, **({"learnable_temperature": False} if name == "negclip" else {}))
    ours = torch.autograd.grad(_call(loss, tensors, plain), list(tensors.values()), allow_unused=True)
    ref_in = {k: v.detach().clone().requires_grad_(True) for k, v in tensors.items()}
    extras = {k: v for k, v in ref_in.items() if k not in ("x", "y")}
    want = reference_value(name, ref_in["x"], ref_in["y"], {**extras, **plain}, {})
    theirs = torch.autograd.grad(want, list(ref_in.values()), allow_unused=True)
    for key, a, b in zip(tensors, ours, theirs):
        if b is None:  # an input the reference does not use (vicreg/barlow: the normalised features)
            assert a is None or torch.count_nonzero(a) == 0, key
            continue
        assert a is not None, key
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10, msg=f"{name}: gradient of {key}")


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_finite_differences(name):
    """torch.autograd.gradcheck (central differences, float64) on every tensor input."""
    tensors, plain = _tensor_inputs(name, 4, 5, seed=11)
    loss = harness.create_loss(name)
    keys = list(tensors)

    def fn(*values):
        return _call(loss, dict(zip(keys, values)), plain)

    assert torch.autograd.gradcheck(fn, tuple(tensors.values()), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_negclip_temperature_gradient_finite_difference():
    """The learnable logit_scale's gradient against a central difference."""
    x, y, extras = inputs_for("negclip", 6, 8, seed=5)
    loss = harness.create_loss("negclip", temperature=0.1)
    total(loss(x, y, **extras)).backward()
    analytic = float(loss.logit_scale.grad)
    start = loss.logit_scale.detach().clone()
    points, values = [], []
    with torch.no_grad():
        for sign in (1, -1):
            loss.logit_scale.copy_(start + sign * 1e-3)
            points.append(float(loss.logit_scale))  # the float32 value actually used
            values.append(float(total(loss(x, y, **extras))))
        loss.logit_scale.copy_(start)
    numeric = (values[0] - values[1]) / (points[0] - points[1])
    assert abs(analytic - numeric) < 1e-4 * max(1.0, abs(numeric))


def test_hn_nce_beta_zero_alpha_one_is_infonce_in_each_direction():
    """w_ij = 1: each direction is CLIP's InfoNCE, and the two are summed."""
    x, y, _ = inputs_for("hn_nce", 7, 8, seed=9)
    terms = harness.create_loss("hn_nce", temperature=0.1, beta=0.0, alpha=1.0)(x, y)
    logits = (x @ y.T) / 0.1
    labels = torch.arange(7)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(terms["image_to_text"], ce(logits, labels), rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["text_to_image"], ce(logits.T, labels), rtol=1e-12, atol=0)
    want = ref.hn_nce(x, y, temperature=0.1, alpha=1.0, beta=0.0)
    assert relative_error(total(terms), want) < 1e-12
