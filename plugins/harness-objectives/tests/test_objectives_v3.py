"""The losses of contract v3 (``sogclr``, ``unicl``, ``albef_itc``): values, gradients and state.

Each is checked in float64 against its numpy transcription (``objectives_reference``) over several
consecutive batches, the state carried by both; its gradients against the transcription's closed
form; its state restored into a fresh instance continues exactly; and the undefined cases are
``ValueError``. They call ``forward`` with the extras as keyword arguments, as the trainer will.
"""

import copy
import io
import math

import numpy as np
import pytest
import torch

import harness
import harness_objectives
import objectives_reference as ref
from objectives_helpers import NAMES, V3_NAMES, build_v3, total, v3_inputs

SHAPES = [(2, 3), (5, 8), (16, 32)]
STEPS = 3  # consecutive batches per check: the state of each step feeds the next

#: non-default settings, checked as well as the defaults
PARAMS = {
    "sogclr": {"temperature": 0.1, "gamma": 0.5},
    "unicl": {"temperature": 0.07, "learnable_temperature": False},
    "albef_itc": {"temperature": 0.1, "alpha": 0.7, "queue_size": 8, "learnable_temperature": False},
}


def values(terms):
    """The terms as plain floats."""
    return {k: float(v.detach()) for k, v in terms.items()}


def close(got, want, rel=1e-9):
    got = float(got.detach()) if isinstance(got, torch.Tensor) else float(got)
    return abs(got - float(want)) <= rel * max(1.0, abs(float(want)))


class Reference:
    """The numpy transcription of ``name``, driven step by step like the loss (state carried)."""

    def __init__(self, name, loss, params, dataset_size, d):
        """``params``: every parameter of the loss (defaults filled in)."""
        self.name, self.loss = name, loss
        if name == "sogclr":
            self.impl = ref.SogCLRReference(dataset_size, temperature=params["temperature"], gamma=params["gamma"])
        elif name == "albef_itc":
            # the initial queues (random unit vectors): those of an instance built with the dimension
            # given (the lazily sized one draws the same: test_albef_lazy_and_explicit_embed_dim_agree)
            sized = harness.create_loss("albef_itc", queue_size=params["queue_size"], embed_dim=d)
            self.impl = ref.AlbefITCReference(
                sized.image_queue.double().numpy(), sized.text_queue.double().numpy(), 0,
                float(loss.logit_scale.detach()), alpha=params["alpha"],
            )

    def step(self, x, y, extras):
        """(terms, gradients) of the reference: terms by name, gradients of their sum by input."""
        if self.name == "sogclr":
            i2t, t2i, gx, gy = self.impl.step(x.numpy(), y.numpy(), extras["index"].tolist())
            return {"image_to_text": i2t, "text_to_image": t2i}, {"x": gx, "y": gy}
        if self.name == "unicl":
            i2t, t2i, gx, gy, gs = ref.unicl(x.numpy(), y.numpy(), extras["caption_group"].tolist(), float(self.loss.logit_scale.detach()))
            return {"image_to_text": i2t, "text_to_image": t2i}, {"x": gx, "y": gy, "logit_scale": gs}
        self.impl.logit_scale = float(self.loss.logit_scale.detach())
        itc, gx, gy, gs = self.impl.step(x.numpy(), y.numpy(), extras["image_momentum"].numpy(), extras["text_momentum"].numpy())
        return {"itc": itc}, {"x": gx, "y": gy, "logit_scale": gs}

    def assert_state(self, loss):
        if self.name == "sogclr":
            for mine, theirs in (("s_image", "s_I"), ("s_text", "s_T"), ("b_image", "b_I"), ("b_text", "b_T")):
                np.testing.assert_allclose(getattr(loss, mine).numpy(), getattr(self.impl, theirs), rtol=1e-10, atol=1e-13, err_msg=mine)
        if self.name == "albef_itc":
            assert torch.equal(loss.image_queue, torch.from_numpy(self.impl.image_queue).float())
            assert torch.equal(loss.text_queue, torch.from_numpy(self.impl.text_queue).float())
            assert int(loss.queue_ptr[0]) == self.impl.queue_ptr


def _run_step(loss, x, y, extras):
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    if loss.logit_scale.grad is not None:
        loss.logit_scale.grad = None
    terms = loss(xs, ys, **extras)
    total(terms).backward()
    grads = {"x": xs.grad, "y": ys.grad}
    if isinstance(loss.logit_scale, torch.nn.Parameter):
        grads["logit_scale"] = loss.logit_scale.grad
    return terms, grads


# --------------------------------------------------------------------------------- the values


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-d{s[1]}")
@pytest.mark.parametrize("setting", ["defaults", "params"])
@pytest.mark.parametrize("name", V3_NAMES)
def test_float64_consecutive_batches_match_reference(name, setting, shape):
    """Three consecutive batches: every term, every gradient and the state after each step."""
    n, d = shape
    params = PARAMS[name] if setting == "params" else {}
    size = 2 * n + 1
    loss = build_v3(name, size, **params)
    reference = Reference(name, loss, {**_defaults(name), **params}, size, d)
    for step in range(STEPS):
        x, y, extras = v3_inputs(name, n, d, seed=10 * step + SHAPES.index(shape), dataset_size=size)
        terms, grads = _run_step(loss, x, y, extras)
        want, want_grads = reference.step(x, y, extras)
        assert set(terms) == set(want)
        for key in want:
            assert terms[key].dtype == torch.float64
            assert close(terms[key], want[key]), (step, key, float(terms[key]), want[key])
        for key, g in want_grads.items():
            if key == "logit_scale":  # a float32 parameter (as CLIP's): its gradient is float32
                if key in grads:
                    assert math.isclose(float(grads[key]), g, rel_tol=1e-6, abs_tol=1e-7), (step, float(grads[key]), g)
                continue
            torch.testing.assert_close(grads[key], torch.as_tensor(g, dtype=torch.float64),
                                       rtol=1e-7, atol=1e-10, msg=f"{name} step {step}: gradient of {key}")
        reference.assert_state(loss)


def _defaults(name):
    return {p["name"]: p for p in harness.list_plugins() if p["kind"] == "loss"}[name]["params"]


@pytest.mark.parametrize("name", V3_NAMES)
def test_float32_within_1e5_of_float64_reference(name):
    """float32 features (the usual run): the terms within 1e-5 of the float64 computation on the same values."""
    x, y, extras = v3_inputs(name, 8, 16, seed=4, dtype=torch.float32)
    got = build_v3(name, 17)(x, y, **extras)
    as64 = {k: (v.double() if v.is_floating_point() else v) for k, v in extras.items()}
    want = build_v3(name, 17)(x.double(), y.double(), **as64)
    for key in want:
        assert got[key].dtype == torch.float32
        assert abs(float(got[key].detach()) - float(want[key].detach())) <= 1e-5 * max(1.0, abs(float(want[key].detach()))), key


@pytest.mark.parametrize("name", V3_NAMES)
def test_gradients_finite_float32_and_float64(name):
    for dtype in (torch.float32, torch.float64):
        loss = build_v3(name, 33)
        for step in range(2):
            x, y, extras = v3_inputs(name, 16, 32, seed=step, dtype=dtype, dataset_size=33)
            _, grads = _run_step(loss, x, y, extras)
            assert all(torch.isfinite(g).all() and bool((g != 0).any()) for g in grads.values()), (name, dtype, step)


@pytest.mark.parametrize("name", ["unicl", "albef_itc"])
def test_gradcheck_finite_differences(name):
    """Central differences on the features (each evaluation on a copy of the state: the same step).

    Not sogclr: its surrogate's weights depend on the features but are detached (by design, as the
    reference), so its gradient is not the derivative of its value; the closed form checks it.
    """
    loss = build_v3(name, 9, **({"queue_size": 3} if name == "albef_itc" else {}))
    x, y, extras = v3_inputs(name, 4, 5, seed=11)
    loss(x, y, **extras)  # a step first, so the state is not the initial one

    def fn(a, b):
        return total(copy.deepcopy(loss)(a, b, **extras))

    inputs = (x.clone().requires_grad_(True), y.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------- the state


def _state_bytes(loss):
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)  # as the checkpoint stores it
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("setting", ["defaults", "params"])
@pytest.mark.parametrize("name", V3_NAMES)
def test_state_round_trip_into_fresh_instance(name, setting):
    """fresh = Loss(**params); fresh.setup(n); fresh.load_state_dict(old.state_dict()): the next steps are identical."""
    params = PARAMS[name] if setting == "params" else {}
    old = build_v3(name, 13, **params)
    for step in range(2):
        x, y, extras = v3_inputs(name, 6, 8, seed=step, dataset_size=13)
        old(x, y, **extras)
    saved = _state_bytes(old)
    fresh = harness_objectives.LOSSES[name](**params)
    if hasattr(fresh, "setup"):  # optional: unicl has no per-pair state
        fresh.setup(13)
    fresh.load_state_dict(saved)
    for key, value in old.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    for step in range(2, 4):  # two more batches on both
        x, y, extras = v3_inputs(name, 6, 8, seed=step, dataset_size=13)
        a, ga = _run_step(old, x, y, extras)
        b, gb = _run_step(fresh, x, y, extras)
        assert values(a) == values(b)
        for key in ga:
            assert torch.equal(ga[key], gb[key]), key
    for key, value in old.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["sogclr", "albef_itc"])
def test_state_restored_without_setup_takes_the_saved_size(name):
    """A fresh instance not set up (or with queues not yet sized) restores the saved state all the same."""
    old = build_v3(name, 13)
    x, y, extras = v3_inputs(name, 6, 8, seed=0, dataset_size=13)
    old(x, y, **extras)
    fresh = harness_objectives.LOSSES[name]()
    fresh.load_state_dict(old.state_dict())
    x, y, extras = v3_inputs(name, 6, 8, seed=1, dataset_size=13)
    assert values(old(x, y, **extras)) == values(fresh(x, y, **extras))


def test_state_of_another_size_is_refused():
    old = build_v3("sogclr", 13)
    fresh = build_v3("sogclr", 14)
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(old.state_dict())
    a = build_v3("albef_itc", 13, queue_size=8, embed_dim=8)
    with pytest.raises(RuntimeError, match="size mismatch"):
        build_v3("albef_itc", 13, queue_size=8, embed_dim=4).load_state_dict(a.state_dict())


@pytest.mark.parametrize("name", ["sogclr", "albef_itc"])
def test_the_state_carried_changes_the_next_step(name):
    """Two different batches: the second step's value depends on the first (the state), unlike a fresh loss's."""
    loss = build_v3(name, 13)
    first = v3_inputs(name, 6, 8, seed=0, dataset_size=13)
    second = v3_inputs(name, 6, 8, seed=1, dataset_size=13)
    if name == "sogclr":  # the second batch revisits rows of the first
        second[2]["index"] = first[2]["index"].flip(0)
    a = total(loss(*first[:2], **first[2]))
    b = total(loss(*second[:2], **second[2]))
    c = total(build_v3(name, 13)(*second[:2], **second[2]))
    assert float(a.detach()) != float(b.detach())
    assert float(b.detach()) != float(c.detach())


def test_unicl_has_no_state_beyond_its_temperature():
    assert set(build_v3("unicl").state_dict()) == {"logit_scale"}
    assert set(build_v3("unicl", learnable_temperature=False).state_dict()) == {"logit_scale"}


def test_state_buffers_named():
    assert set(build_v3("sogclr").state_dict()) == {"logit_scale", "s_image", "s_text", "b_image", "b_text"}
    assert set(build_v3("albef_itc").state_dict()) == {"logit_scale", "image_queue", "text_queue", "queue_ptr"}
    loss = build_v3("sogclr", 50)
    assert all(b.shape == (50,) and b.dtype == torch.float64 for k, b in loss.state_dict().items() if k != "logit_scale")


# ------------------------------------------------------------------------------ undefined cases


@pytest.mark.parametrize("name", V3_NAMES)
def test_missing_extra_is_a_value_error(name):
    x, y, extras = v3_inputs(name, 5, 8)
    loss = build_v3(name)
    for key in extras:
        with pytest.raises(ValueError, match=key):
            loss(x, y, **{k: v for k, v in extras.items() if k != key})


@pytest.mark.parametrize("name", ["sogclr", "unicl"])
def test_batch_of_one_is_a_value_error(name):
    x, y, extras = v3_inputs(name, 1, 8)
    with pytest.raises(ValueError, match="batch of 1"):
        build_v3(name)(x, y, **extras)


def test_albef_batch_of_one_needs_a_queue():
    x, y, extras = v3_inputs("albef_itc", 1, 8)
    terms = build_v3("albef_itc", queue_size=4)(x, y, **extras)  # negatives from the queue
    assert torch.isfinite(terms["itc"])
    with pytest.raises(ValueError, match="batch of 1"):
        build_v3("albef_itc", queue_size=0)(x, y, **extras)


def test_sogclr_without_setup_is_a_clear_value_error():
    x, y, extras = v3_inputs("sogclr", 5, 8)
    with pytest.raises(ValueError, match=r"setup\(dataset_size\)"):
        harness.create_loss("sogclr")(x, y, **extras)


def test_sogclr_index_checked():
    loss = build_v3("sogclr", 10)
    x, y, _ = v3_inputs("sogclr", 5, 8)
    for bad, match in [
        (torch.tensor([0, 1, 2, 3, 10]), "index 10 is out of range for the 10"),
        (torch.tensor([0, -1, 2, 3, 4]), "index -1 is out of range"),
        (torch.tensor([0.0, 1, 2, 3, 4]), "integer"),
        (torch.tensor([0, 1, 2, 3]), r"shape \(5,\)"),
        ([0, 1, 2, 3, 4], "integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            loss(x, y, index=bad)
    assert float(loss.s_image.abs().sum()) == 0  # nothing written by a refused call


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "10", None])
def test_setup_refuses_a_bad_dataset_size(bad):
    for name in ("sogclr", "albef_itc"):
        with pytest.raises(ValueError, match="dataset_size"):
            harness.create_loss(name).setup(bad)
    loss = harness.create_loss("sogclr")
    loss.setup(np.int64(7))
    assert loss.dataset_size == 7


def test_unicl_caption_group_checked():
    loss = build_v3("unicl")
    x, y, _ = v3_inputs("unicl", 5, 8)
    for bad, match in [(torch.zeros(5), "integer"), (torch.zeros(4, dtype=torch.long), r"shape \(5,\)"),
                       (torch.zeros(5, dtype=torch.bool), "integer")]:
        with pytest.raises(ValueError, match=match):
            loss(x, y, caption_group=bad)


def test_albef_inputs_checked():
    loss = build_v3("albef_itc", embed_dim=8)
    x, y, extras = v3_inputs("albef_itc", 5, 8)
    with pytest.raises(ValueError, match=r"image_momentum must have .*\(5, 8\)"):
        loss(x, y, image_momentum=extras["image_momentum"][:4], text_momentum=extras["text_momentum"])
    x4, y4, extras4 = v3_inputs("albef_itc", 5, 4)
    with pytest.raises(ValueError, match="8-dimensional"):
        loss(x4, y4, **extras4)
    assert int(loss.queue_ptr[0]) == 0  # nothing enqueued by refused calls


@pytest.mark.parametrize("name", V3_NAMES)
def test_half_precision_inputs_are_cast_up(name):
    x, y, extras = v3_inputs(name, 6, 8, dtype=torch.bfloat16)
    terms = build_v3(name)(x, y, **extras)
    as32 = {k: (v.float() if v.is_floating_point() else v) for k, v in extras.items()}
    want = build_v3(name)(x.float(), y.float(), **as32)
    for key, value in terms.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
        assert math.isclose(float(value.detach()), float(want[key].detach()), rel_tol=1e-6, abs_tol=1e-7), key


# ------------------------------------------------------------------------------- special cases


def test_unicl_with_distinct_groups_is_clips_two_directions_summed():
    x, y, _ = v3_inputs("unicl", 7, 8, seed=3)
    loss = build_v3("unicl", temperature=0.1, learnable_temperature=False)
    terms = loss(x, y, caption_group=torch.arange(7) * 5)
    logits = math.exp(float(loss.logit_scale)) * (x @ y.T)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(terms["image_to_text"], ce(logits, torch.arange(7)), rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["text_to_image"], ce(logits.T, torch.arange(7)), rtol=1e-12, atol=0)


def test_unicl_same_group_rows_are_positives_not_negatives():
    """Swapping the captions of two rows of one group changes nothing; the group's labels' values do not matter."""
    x, y, _ = v3_inputs("unicl", 6, 8, seed=5)
    loss = build_v3("unicl")
    groups = torch.tensor([0, 1, 0, 2, 2, 3])
    base = total(loss(x, y, caption_group=groups)).detach()
    swapped = y.clone()
    swapped[[0, 2]] = y[[2, 0]]
    assert math.isclose(float(total(loss(x, swapped, caption_group=groups)).detach()), float(base), rel_tol=1e-12)
    relabelled = torch.tensor([7, -4, 7, 100, 100, 3])
    assert float(total(loss(x, y, caption_group=relabelled)).detach()) == float(base)
    assert float(total(loss(x, y, caption_group=torch.arange(6))).detach()) != float(base)


def test_sogclr_gamma_one_has_no_memory():
    """gamma = 1: s is this batch's estimate, so the value does not depend on the state (b cancels)."""
    loss = build_v3("sogclr", 13, gamma=1.0)
    first = v3_inputs("sogclr", 6, 8, seed=0, dataset_size=13)
    x, y, extras = v3_inputs("sogclr", 6, 8, seed=1, dataset_size=13)
    loss(*first[:2], **first[2])
    carried = loss(x, y, **extras)
    fresh = build_v3("sogclr", 13, gamma=1.0)(x, y, **extras)
    for key in carried:
        assert math.isclose(float(carried[key]), float(fresh[key]), rel_tol=1e-12), key


def test_sogclr_repeated_index_takes_the_last_row_as_the_reference():
    index = torch.tensor([3, 1, 3, 0, 1])
    loss, reference = build_v3("sogclr", 6), ref.SogCLRReference(6)
    for seed in range(2):
        x, y, _ = v3_inputs("sogclr", 5, 8, seed=seed)
        terms = loss(x, y, index=index)
        i2t, t2i, _, _ = reference.step(x.numpy(), y.numpy(), index.tolist())
        assert close(terms["image_to_text"], i2t) and close(terms["text_to_image"], t2i)
        np.testing.assert_allclose(loss.s_image.numpy(), reference.s_I, rtol=1e-12)
        np.testing.assert_allclose(loss.s_text.numpy(), reference.s_T, rtol=1e-12)


def test_sogclr_index_int32_accepted():
    """Any integer dtype is taken (cast to int64); each listed row is written."""
    loss = build_v3("sogclr", 8)
    x, y, extras = v3_inputs("sogclr", 4, 8, dataset_size=8)
    loss(x, y, index=extras["index"].int())  # int32 accepted (cast to int64)
    assert int((loss.s_image != 0).sum()) == 4


def test_albef_without_queue_or_distillation_is_clip_on_the_momentum_features():
    """K = 0, alpha = 0, momentum features = the features: CLIP's symmetric loss."""
    x, y, _ = v3_inputs("albef_itc", 7, 8, seed=2)
    loss = build_v3("albef_itc", queue_size=0, alpha=0.0, learnable_temperature=False, temperature=0.1)
    terms = loss(x, y, image_momentum=x, text_momentum=y)
    logits = math.exp(float(loss.logit_scale)) * (x @ y.T)
    ce = torch.nn.functional.cross_entropy
    clip = (ce(logits, torch.arange(7)) + ce(logits.T, torch.arange(7))) / 2
    torch.testing.assert_close(terms["itc"], clip, rtol=1e-12, atol=0)


def test_albef_online_features_meet_only_momentum_features():
    """Images are contrasted with the momentum texts and texts with the momentum images (as ALBEF):
    the image features' gradient does not depend on the text features, and the other way round."""
    x, y, extras = v3_inputs("albef_itc", 5, 8, seed=6)
    x2, y2, _ = v3_inputs("albef_itc", 5, 8, seed=7)

    def grads(a, b):
        a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        total(build_v3("albef_itc")(a, b, **extras)).backward()
        return a.grad, b.grad

    gx, gy = grads(x, y)
    assert torch.equal(grads(x, y2)[0], gx)
    assert torch.equal(grads(x2, y)[1], gy)


def test_albef_ring_buffer_wraps_and_keeps_the_last_rows():
    loss = build_v3("albef_itc", queue_size=5, embed_dim=4)
    ptrs = []
    for seed, n in enumerate([3, 3, 3, 7]):
        x, y, extras = v3_inputs("albef_itc", n, 4, seed=seed)
        loss(x, y, **extras)
        ptrs.append(int(loss.queue_ptr[0]))
    assert ptrs == [3, 1, 4, 1]
    # the batch of 7 written row after row from pointer 4: rows 2..6 end in slots 1, 2, 3, 4, 0
    slots = [(4 + r) % 5 for r in range(2, 7)]
    torch.testing.assert_close(loss.image_queue[slots], extras["image_momentum"][2:].float(), rtol=0, atol=0)
    torch.testing.assert_close(loss.text_queue[slots], extras["text_momentum"][2:].float(), rtol=0, atol=0)


def test_albef_lazy_and_explicit_embed_dim_agree():
    """embed_dim = 0 sizes the queues from the first batch, drawing what embed_dim = d draws at construction."""
    lazy, explicit = build_v3("albef_itc", queue_size=16), build_v3("albef_itc", queue_size=16, embed_dim=8)
    assert lazy.image_queue.shape == (16, 0) and explicit.image_queue.shape == (16, 8)
    for seed in range(2):
        x, y, extras = v3_inputs("albef_itc", 5, 8, seed=seed)
        assert float(lazy(x, y, **extras)["itc"].detach()) == float(explicit(x, y, **extras)["itc"].detach())
    for key, value in explicit.state_dict().items():
        assert torch.equal(lazy.state_dict()[key], value), key
    # the initial queues are random unit vectors, the same for every build, and not the job's random stream
    torch.manual_seed(0)
    before = torch.rand(1)
    a = build_v3("albef_itc", embed_dim=8)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), before)
    torch.testing.assert_close(a.image_queue.norm(dim=1), torch.ones(1024))
    assert torch.equal(a.image_queue, build_v3("albef_itc", embed_dim=8).image_queue)
    assert not torch.equal(a.image_queue, a.text_queue)


def test_albef_alpha_warmup_adds_the_step_extra():
    loss = build_v3("albef_itc", alpha=0.4, alpha_warmup_steps=100)
    assert "step" in loss.extras and "step" not in build_v3("albef_itc").extras
    assert [loss.alpha_at(s) for s in (0, 50, 100, 500)] == [0.0, 0.2, 0.4, 0.4]
    x, y, extras = v3_inputs("albef_itc", 5, 8, seed=1)
    with pytest.raises(ValueError, match="step"):
        loss(x, y, **extras)
    # step 0: alpha = 0 (targets one-hot), as a loss built with alpha = 0
    got = loss(x, y, **extras, step=0)
    want = build_v3("albef_itc", alpha=0.0)(x, y, **extras)
    assert float(got["itc"].detach()) == float(want["itc"].detach())


def test_albef_temperature_kept_in_albef_range():
    loss = build_v3("albef_itc")
    with torch.no_grad():
        loss.logit_scale.fill_(0.1)  # t = 0.905 > 0.5: used as 0.5
    x, y, extras = v3_inputs("albef_itc", 5, 8, seed=1)
    at_half = build_v3("albef_itc", temperature=0.5)
    assert float(loss(x, y, **extras)["itc"].detach()) == float(at_half(x, y, **extras)["itc"].detach())


def test_only_albef_asks_for_momentum_towers():
    """The trainer keeps EMA towers for a loss with a float ``momentum`` in (0, 1): albef_itc, and no other loss here."""
    loss = build_v3("albef_itc", momentum=0.99)
    assert isinstance(loss.momentum, float) and loss.momentum == 0.99
    assert build_v3("albef_itc").momentum == 0.995
    for name in NAMES + ["sogclr", "unicl"]:
        assert not hasattr(harness.create_loss(name), "momentum"), name
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="momentum"):
            harness_objectives.LOSSES["albef_itc"](momentum=bad)
