"""The built-in losses against open_clip and against loop-based transcriptions of their formulas.

The references below are written from the formulas in issue 3 with Python floats and loops; they
do not call the plugins' helpers. Inputs are float32 embeddings; the references see the same values
in float64.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import harness
from harness.distributed import gather_features

ALL = ["clip", "cua", "cuaxu", "siglip", "cyclip", "dcl", "align_uniform"]
NEEDS_PAIRS = {"cua", "cuaxu", "align_uniform", "dcl"}  # undefined for a batch of one

pytestmark = pytest.mark.usefixtures("one_thread")


def pairs(n: int, d: int, seed: int = 0, noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm float32 (x, y) with y a noisy copy of x, so pairs are more similar than non-pairs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x + noise * torch.randn(n, d, generator=g)
    return F.normalize(x, dim=1), F.normalize(y, dim=1)


def total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(terms.values())


def value(name: str, x, y, **params) -> float:
    return total(harness.create_loss(name, **params)(x, y)).item()


# ---------------------------------------------------------------- loop-based references (floats)


def dot(a, b):
    return sum(p * q for p, q in zip(a, b))


def sqdist(a, b):
    return sum((p - q) ** 2 for p, q in zip(a, b))


def ref_clip(X, Y, s):
    n = len(X)
    img = sum(-s * dot(X[i], Y[i]) + math.log(sum(math.exp(s * dot(X[i], Y[j])) for j in range(n))) for i in range(n))
    txt = sum(-s * dot(Y[i], X[i]) + math.log(sum(math.exp(s * dot(Y[i], X[j])) for j in range(n))) for i in range(n))
    return (img / n + txt / n) / 2


def ref_uniformity(X):
    n = len(X)
    vals = [math.exp(-2 * sqdist(X[i], X[j])) for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(vals) / len(vals))


def ref_cross_uniformity(X, Y):
    n = len(X)
    vals = [math.exp(-2 * sqdist(X[i], Y[j])) for i in range(n) for j in range(n) if i != j]
    return math.log(sum(vals) / len(vals))


def ref_alignment(X, Y):
    return sum(sqdist(a, b) for a, b in zip(X, Y)) / len(X)


def ref_cua(X, Y, s, wu=1.0, wa=1.0):
    return ref_clip(X, Y, s) + wu * 0.5 * (ref_uniformity(X) + ref_uniformity(Y)) + wa * ref_alignment(X, Y)


def ref_cuaxu(X, Y, s, wu=1.0, wa=1.0, wx=1.0):
    return ref_cua(X, Y, s, wu, wa) + wx * ref_cross_uniformity(X, Y)


def ref_cyclip(X, Y, s, lc=0.25, li=0.25):
    n = len(X)
    cross = sum((dot(X[j], Y[k]) - dot(X[k], Y[j])) ** 2 for j in range(n) for k in range(n)) / n
    inmodal = sum((dot(X[j], X[k]) - dot(Y[j], Y[k])) ** 2 for j in range(n) for k in range(n)) / n
    return ref_clip(X, Y, s) + lc * cross + li * inmodal


def ref_dcl(X, Y, s):
    n = len(X)

    def direction(A, B):
        return sum(
            -s * dot(A[i], B[i]) + math.log(sum(math.exp(s * dot(A[i], B[j])) for j in range(n) if j != i))
            for i in range(n)
        ) / n

    return (direction(X, Y) + direction(Y, X)) / 2


def ref_align_uniform(X, Y, wa=1.0, wu=1.0):
    return wa * ref_alignment(X, Y) + wu * 0.5 * (ref_uniformity(X) + ref_uniformity(Y))


def lists(x, y):
    return x.double().tolist(), y.double().tolist()


# ---------------------------------------------------------------- equal to open_clip


@pytest.mark.parametrize("n", [1, 2, 7, 64])
@pytest.mark.parametrize("temperature", [0.01, 0.07, 0.5, 1.0])
def test_clip_equals_open_clip(n, temperature):
    from open_clip.loss import ClipLoss

    x, y = pairs(n, 32, seed=n)
    expected = ClipLoss()(x, y, logit_scale=torch.tensor(1 / temperature))
    for learnable in (True, False):
        terms = harness.create_loss("clip", temperature=temperature, learnable_temperature=learnable)(x, y)
        assert list(terms) == ["contrastive"]
        torch.testing.assert_close(terms["contrastive"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
@pytest.mark.parametrize(("temperature", "bias"), [(0.1, -10.0), (0.05, 0.0), (1.0, 2.5), (0.01, -3.0)])
def test_siglip_equals_open_clip(n, temperature, bias):
    from open_clip.loss import SigLipLoss

    x, y = pairs(n, 32, seed=n + 1)
    expected = SigLipLoss()(x, y, logit_scale=torch.tensor(1 / temperature), logit_bias=torch.tensor(bias))
    terms = harness.create_loss("siglip", temperature=temperature, bias=bias)(x, y)
    torch.testing.assert_close(terms["contrastive"], expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- equal to the formulas


@pytest.mark.parametrize(("n", "d"), [(2, 8), (5, 3), (12, 16)])
@pytest.mark.parametrize(
    "params", [{}, {"temperature": 0.07}, {"temperature": 0.5, "uniformity_weight": 0.3, "alignment_weight": 2.0}]
)
def test_cua_matches_formula(n, d, params):
    x, y = pairs(n, d, seed=10 * n + d)
    X, Y = lists(x, y)
    s = 1 / params.get("temperature", 0.01)
    expected = ref_cua(X, Y, s, params.get("uniformity_weight", 1.0), params.get("alignment_weight", 1.0))
    assert value("cua", x, y, **params) == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize(("n", "d"), [(2, 8), (5, 3), (12, 16)])
@pytest.mark.parametrize("params", [{}, {"temperature": 0.2, "cross_uniformity_weight": 0.5, "alignment_weight": 0.0}])
def test_cuaxu_matches_formula(n, d, params):
    x, y = pairs(n, d, seed=10 * n + d + 1)
    X, Y = lists(x, y)
    s = 1 / params.get("temperature", 0.01)
    expected = ref_cuaxu(
        X, Y, s, 1.0, params.get("alignment_weight", 1.0), params.get("cross_uniformity_weight", 1.0)
    )
    assert value("cuaxu", x, y, **params) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_cuaxu_terms_are_cua_terms_plus_cross_uniformity():
    x, y = pairs(9, 6, seed=3)
    cua = harness.create_loss("cua")(x, y)
    cuaxu = harness.create_loss("cuaxu", cross_uniformity_weight=0.5)(x, y)
    assert set(cuaxu) == set(cua) | {"cross_uniformity"}
    for key in cua:
        torch.testing.assert_close(cuaxu[key], cua[key])
    X, Y = lists(x, y)
    assert cuaxu["cross_uniformity"].item() == pytest.approx(0.5 * ref_cross_uniformity(X, Y), rel=1e-5)
    assert cua["uniformity"].item() == pytest.approx(0.5 * (ref_uniformity(X) + ref_uniformity(Y)), rel=1e-5)


# (17, 4): d < N/2 takes the d x d route for the in-modal term; (8, 16) the N x N one
@pytest.mark.parametrize(("n", "d"), [(1, 4), (2, 8), (17, 4), (8, 16)])
@pytest.mark.parametrize("params", [{}, {"temperature": 0.02, "cross_weight": 1.0, "inmodal_weight": 0.1}])
def test_cyclip_matches_formula(n, d, params):
    x, y = pairs(n, d, seed=n * d, noise=1.0)
    X, Y = lists(x, y)
    s = 1 / params.get("temperature", 0.07)
    expected = ref_cyclip(X, Y, s, params.get("cross_weight", 0.25), params.get("inmodal_weight", 0.25))
    assert value("cyclip", x, y, **params) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_cyclip_matches_reference_code_form():
    """CyCLIP's train.py: (logits_i - logits_t).square().mean() / s^2 * N on scaled logits."""
    x, y = pairs(24, 8, seed=4, noise=1.0)
    s = 1 / 0.07
    lt = s * x @ y.T
    li, lt_ = s * x @ x.T, s * y @ y.T
    inmodal = (li - lt_).square().mean() / (s * s) * 24
    crossmodal = (lt - lt.T).square().mean() / (s * s) * 24
    terms = harness.create_loss("cyclip")(x, y)
    torch.testing.assert_close(terms["inmodal_cyclic"], 0.25 * inmodal, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["crossmodal_cyclic"], 0.25 * crossmodal, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("n", "d"), [(2, 8), (6, 3), (15, 16)])
@pytest.mark.parametrize("temperature", [0.1, 0.05, 1.0])
def test_dcl_matches_formula(n, d, temperature):
    x, y = pairs(n, d, seed=n + d)
    X, Y = lists(x, y)
    assert value("dcl", x, y, temperature=temperature) == pytest.approx(ref_dcl(X, Y, 1 / temperature), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize(("n", "d"), [(2, 8), (6, 3), (15, 16)])
@pytest.mark.parametrize("params", [{}, {"alignment_weight": 0.5, "uniformity_weight": 3.0}, {"alignment_weight": 0.0}])
def test_align_uniform_matches_formula(n, d, params):
    x, y = pairs(n, d, seed=2 * n + d)
    X, Y = lists(x, y)
    expected = ref_align_uniform(X, Y, params.get("alignment_weight", 1.0), params.get("uniformity_weight", 1.0))
    assert value("align_uniform", x, y, **params) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_dcl_differs_from_clip_by_the_positive_in_the_denominator():
    # one direction of CLIP: -l_ii + log(exp(l_ii) + sum_{j!=i} exp(l_ij)); DCL drops exp(l_ii)
    x, y = pairs(10, 8, seed=5)
    assert value("dcl", x, y, temperature=0.1) < value("clip", x, y, temperature=0.1)


# ---------------------------------------------------------------- the contract


EXPECTED_PARAMS = {
    "clip": {"temperature": 0.07, "learnable_temperature": True},
    "cua": {"temperature": 0.01, "learnable_temperature": False, "uniformity_weight": 1.0, "alignment_weight": 1.0},
    "cuaxu": {
        "temperature": 0.01,
        "learnable_temperature": False,
        "uniformity_weight": 1.0,
        "alignment_weight": 1.0,
        "cross_uniformity_weight": 1.0,
    },
    "siglip": {"temperature": 0.1, "learnable_temperature": True, "bias": -10.0, "learnable_bias": True},
    "cyclip": {"temperature": 0.07, "learnable_temperature": True, "cross_weight": 0.25, "inmodal_weight": 0.25},
    "dcl": {"temperature": 0.1, "learnable_temperature": False},
    "align_uniform": {"alignment_weight": 1.0, "uniformity_weight": 1.0},
}


def test_registered_with_contract_params():
    listed = {p["name"]: p for p in harness.list_plugins() if p["kind"] == "loss"}
    for name, params in EXPECTED_PARAMS.items():
        assert listed[name]["params"] == params
        assert listed[name]["distribution"] == "contrastive-harness"
        assert listed[name]["description"]


@pytest.mark.parametrize("name", [n for n in ALL if n != "align_uniform"])
def test_logit_scale_is_log_inverse_temperature(name):
    fixed = harness.create_loss(name, temperature=0.25, learnable_temperature=False)
    assert fixed.logit_scale.item() == pytest.approx(math.log(4.0))
    assert not fixed.logit_scale.requires_grad and "logit_scale" in dict(fixed.named_buffers())
    learned = harness.create_loss(name, temperature=0.25, learnable_temperature=True)
    assert "logit_scale" in dict(learned.named_parameters())
    for loss in (fixed, learned):
        copy = harness.create_loss(name, temperature=0.5, learnable_temperature=loss.learnable_temperature)
        copy.load_state_dict(loss.state_dict())
        assert copy.logit_scale.item() == pytest.approx(math.log(4.0))


def test_scale_is_clamped_at_100():
    x, y = pairs(6, 8)
    loss = harness.create_loss("clip", temperature=0.01)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))  # e.g. an optimiser step past the cap
    expected = harness.create_loss("clip", temperature=0.01, learnable_temperature=False)(x, y)["contrastive"]
    torch.testing.assert_close(loss(x, y)["contrastive"], expected)


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_embeddings_and_learnable_scalars(name):
    x, y = pairs(8, 16, seed=7)
    x.requires_grad_(True)
    y.requires_grad_(True)
    loss = harness.create_loss(name)
    total(loss(x, y)).backward()
    for t in (x, y):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    learnable = {n: p for n, p in loss.named_parameters()}
    expected = {"clip": {"logit_scale"}, "siglip": {"logit_scale", "logit_bias"}, "cyclip": {"logit_scale"}}
    assert set(learnable) == expected.get(name, set())
    for p in learnable.values():
        assert p.grad is not None and p.grad.abs().item() > 0
    for b in loss.buffers():
        assert not b.requires_grad and b.grad is None


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(("n", "d"), [(9, 4), (5, 8)])  # cyclip: the d x d and the N x N routes
def test_analytic_gradients_match_finite_differences(name, n, d):
    x, y = pairs(n, d, seed=11)
    loss = harness.create_loss(name, **({} if name == "align_uniform" else {"temperature": 0.2}))
    inputs = (x.double().requires_grad_(True), y.double().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda a, b: total(loss(a, b)), inputs)


def test_fixed_temperature_gets_no_gradient_learnable_does():
    x, y = pairs(8, 16, seed=8)
    fixed = harness.create_loss("cua")
    assert list(fixed.parameters()) == []
    learned = harness.create_loss("cua", learnable_temperature=True, temperature=0.05)
    total(learned(x, y)).backward()
    assert learned.logit_scale.grad is not None and learned.logit_scale.grad.item() != 0
    siglip = harness.create_loss("siglip", learnable_temperature=False, learnable_bias=False)
    assert list(siglip.parameters()) == []


@pytest.mark.parametrize("name", ALL)
def test_swapping_image_and_text_leaves_the_loss_unchanged(name):
    x, y = pairs(11, 8, seed=12)
    loss = harness.create_loss(name)
    torch.testing.assert_close(total(loss(x, y)), total(loss(y, x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_permuting_the_batch_leaves_every_term_unchanged(name):
    x, y = pairs(13, 8, seed=13)
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(0))
    loss = harness.create_loss(name)
    a, b = loss(x, y), loss(x[perm], y[perm])
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)


def test_permuting_one_side_only_changes_the_loss():
    x, y = pairs(13, 8, seed=13)
    perm = torch.roll(torch.arange(13), 1)
    for name in ALL:
        assert value(name, x, y[perm]) > value(name, x, y) + 1e-3, name


# ---------------------------------------------------------------- numerical safety


@pytest.mark.parametrize("name", ALL)
def test_batch_of_one(name):
    x, y = pairs(1, 8)
    loss = harness.create_loss(name)
    if name in NEEDS_PAIRS:
        with pytest.raises(ValueError, match="single sample|at least 2"):
            loss(x, y)
    else:
        terms = loss(x, y)
        assert all(torch.isfinite(t) for t in terms.values())


def test_batch_of_one_without_uniformity_terms():
    x, y = pairs(1, 8)
    terms = harness.create_loss("cuaxu", uniformity_weight=0.0, cross_uniformity_weight=0.0)(x, y)
    assert terms["uniformity"].item() == 0 and terms["cross_uniformity"].item() == 0
    assert terms["contrastive"].item() == pytest.approx(0.0, abs=1e-6)  # one class: CE is 0
    with pytest.raises(ValueError, match="uniformity of a single sample is undefined"):
        harness.create_loss("align_uniform", alignment_weight=1.0)(x, y)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", ["batch2", "identical_rows", "x_equals_y", "antipodal"])
def test_degenerate_inputs_are_finite(name, case):
    x, y = pairs(2 if case == "batch2" else 6, 8, seed=3)
    if case == "identical_rows":
        x = y = x[:1].expand(6, 8).clone()
    elif case == "x_equals_y":
        y = x.clone()
    elif case == "antipodal":
        y = -x
    x.requires_grad_(True)
    loss = harness.create_loss(name)
    out = total(loss(x, y))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(name, dtype):
    x, y = pairs(16, 32, seed=14)
    xh, yh = x.to(dtype), y.to(dtype)
    loss = harness.create_loss(name)
    half = loss(xh, yh)
    upcast = loss(xh.float(), yh.float())
    for key, t in half.items():
        assert t.dtype == torch.float32 and torch.isfinite(t)
        torch.testing.assert_close(t, upcast[key])


@pytest.mark.parametrize("name", ALL)
def test_autocast_does_not_lower_the_loss_precision(name):
    x, y = pairs(16, 32, seed=15)
    loss = harness.create_loss(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = total(loss(x, y))
    torch.testing.assert_close(got, total(loss(x, y)), rtol=1e-6, atol=1e-6)


def test_bad_shapes_and_params_are_clear_errors():
    loss = harness.create_loss("clip")
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(4, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="empty"):
        loss(torch.zeros(0, 8), torch.zeros(0, 8))
    bad = [  # limits declared once, in each factory's signature, checked by the registry
        ("clip", {"temperature": 0.0}, "temperature"),
        ("clip", {"temperature": -0.1}, "temperature"),
        ("clip", {"temperature": float("nan")}, "temperature"),
        ("cua", {"temperature": 0.001}, r"temperature: Input should be greater than or equal to 0\.01"),
        ("dcl", {"learnable_temperature": "yes"}, "learnable_temperature"),
        ("cua", {"uniformity_weight": -1.0}, "uniformity_weight"),
        ("cuaxu", {"cross_uniformity_weight": float("inf")}, "cross_uniformity_weight"),
        ("cyclip", {"inmodal_weight": -0.5}, "inmodal_weight"),
        ("siglip", {"bias": float("nan")}, "bias"),
        ("align_uniform", {"alignment_weight": 0.0, "uniformity_weight": 0.0}, "both 0"),
    ]
    for name, params, match in bad:
        with pytest.raises(ValueError, match=match):
            harness.create_loss(name, **params)


# ---------------------------------------------------------------- a tiny training run


@pytest.mark.parametrize("name", ALL)
def test_training_on_separable_pairs_lowers_the_loss(name):
    torch.manual_seed(0)
    n, dz, d = 64, 6, 8
    z = torch.randn(n, dz)
    images = z @ torch.randn(dz, 12) + 0.05 * torch.randn(n, 12)
    texts = z @ torch.randn(dz, 10) + 0.05 * torch.randn(n, 10)
    towers = torch.nn.ModuleList([torch.nn.Linear(12, d), torch.nn.Linear(10, d)])
    loss = harness.create_loss(name)
    opt = torch.optim.Adam([*towers.parameters(), *loss.parameters()], lr=1e-2)

    def step():
        x = F.normalize(towers[0](images), dim=1)
        y = F.normalize(towers[1](texts), dim=1)
        return total(loss(x, y)), x, y

    with torch.no_grad():
        before, x, y = step()
        acc_before = ((x @ y.T).argmax(1) == torch.arange(n)).float().mean().item()
    for _ in range(200):
        out, _, _ = step()
        opt.zero_grad()
        out.backward()
        opt.step()
    with torch.no_grad():
        after, x, y = step()
        acc_after = ((x @ y.T).argmax(1) == torch.arange(n)).float().mean().item()
    assert after.item() < before.item() - 0.1 * abs(before.item())
    assert acc_after > max(0.8, acc_before)


# ---------------------------------------------------------------- distributed


def test_gather_features_is_a_no_op_without_a_process_group():
    x, y = pairs(3, 4)
    gx, gy = gather_features(x, y)
    assert gx is x and gy is y


RANK_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist, torch.nn.functional as F
    import harness

    rank, world, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    local_n = 4
    g = torch.Generator().manual_seed(0)
    X = F.normalize(torch.randn(world * local_n, 8, generator=g), dim=1)
    Y = F.normalize(X + 0.5 * torch.randn(world * local_n, 8, generator=g), dim=1)
    names = ["clip", "cua", "cuaxu", "siglip", "cyclip", "dcl", "align_uniform"]
    expected = {}
    for name in names:  # single process, the whole batch
        x, y = X.clone().requires_grad_(True), Y.clone().requires_grad_(True)
        out = sum(harness.create_loss(name)(x, y).values())
        out.backward()
        expected[name] = (out.detach(), x.grad, y.grad)

    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
    rows = slice(rank * local_n, (rank + 1) * local_n)
    for name in names:
        x, y = X[rows].clone().requires_grad_(True), Y[rows].clone().requires_grad_(True)
        out = sum(harness.create_loss(name)(x, y).values())
        out.backward()
        value, gx, gy = expected[name]
        torch.testing.assert_close(out.detach(), value, rtol=1e-5, atol=1e-6, msg=name)
        # gradients reach this rank's shard only, equal to the global-batch gradient of those rows
        torch.testing.assert_close(x.grad, gx[rows], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(y.grad, gy[rows], rtol=1e-5, atol=1e-6, msg=name)
    dist.destroy_process_group()
    print("ok", rank)
    """
)


@pytest.mark.slow
def test_losses_see_the_global_batch_across_two_ranks(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_LOAD_PLUGINS": ""}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), "2", str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, out
        assert f"ok {rank}" in out
