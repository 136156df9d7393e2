"""clip_cosine_temperature: the schedule, the temperature it reports, and the loss at each step."""

import math

import pytest
import torch

import harness
import objectives_reference as ref
from objectives_helpers import unit_rows

PARAMS = {"temperature_min": 0.05, "temperature_max": 0.5, "period_steps": 100}


def tau(step, tmin=0.05, tmax=0.5, period=100):
    return tmin + (tmax - tmin) * (1 + math.cos(2 * math.pi * step / period)) / 2


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.5), (25, 0.275), (50, 0.05), (75, 0.275), (100, 0.5), (125, 0.275), (150, 0.05), (230, tau(230)), (1000, 0.5)],
)
def test_schedule_and_reported_temperature(step, expected):
    loss = harness.create_loss("clip_cosine_temperature", **PARAMS)
    assert math.isclose(loss.temperature_at(step), expected, rel_tol=1e-12, abs_tol=1e-12)
    x, y = unit_rows(8, 16, 0), unit_rows(8, 16, 1)
    got = loss(x, y, step=step, total_steps=50)["contrastive"]  # the period, not total_steps, sets the schedule
    # what the trainer logs as train.temperature: 1 / exp(logit_scale), from the float32 buffer
    reported = float(torch.exp(-loss.logit_scale.clamp(max=math.log(100))))
    assert math.isclose(reported, expected, rel_tol=1e-6)
    assert math.isclose(float(got), float(ref.clip(x, y, expected)), rel_tol=1e-9)


def test_the_reported_temperature_follows_the_latest_step():
    loss = harness.create_loss("clip_cosine_temperature")  # tau_min 0.1, tau_max 1.0, period 400
    assert math.isclose(float(torch.exp(-loss.logit_scale)), 1.0, rel_tol=1e-6)  # tau_0 before any step
    x, y = unit_rows(4, 8, 2), unit_rows(4, 8, 3)
    for step, expected in [(0, 1.0), (100, 0.55), (200, 0.1), (300, 0.55), (400, 1.0), (600, 0.1)]:
        loss(x, y, step=step, total_steps=1000)
        assert math.isclose(float(torch.exp(-loss.logit_scale)), expected, rel_tol=1e-6), step
        assert math.isclose(ref.cosine_tau(step), expected, rel_tol=1e-12, abs_tol=1e-12)


def test_default_schedule_matches_the_reference_form():
    """The reference writes cos(pi * epoch / t_max) with t_max = 200: the same as period 400."""
    loss = harness.create_loss("clip_cosine_temperature")
    for step in range(0, 1201, 37):
        t_max = 200
        reference = 0.1 + 0.5 * (1.0 - 0.1) * (1 + math.cos(math.pi * step / t_max))
        assert math.isclose(loss.temperature_at(step), reference, rel_tol=1e-12)


def test_step_is_required_and_checked():
    loss = harness.create_loss("clip_cosine_temperature")
    x, y = unit_rows(4, 8, 0), unit_rows(4, 8, 1)
    with pytest.raises(TypeError):
        loss(x, y)
    with pytest.raises(ValueError, match="step"):
        loss(x, y, step=-1, total_steps=10)
    with pytest.raises(ValueError, match="step"):
        loss(x, y, step=1.5, total_steps=10)
    assert torch.isfinite(loss(x, y, step=torch.tensor(3), total_steps=10)["contrastive"])
