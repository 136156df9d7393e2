"""The fused clip loss: the same loss and gradients as two cross-entropies (float64, to 1e-10)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import harness
from harness.builtin.losses.clip import clip_contrastive, fused_clip_contrastive


@pytest.mark.parametrize("n,d", [(1, 3), (2, 4), (7, 5), (64, 16), (256, 64)])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_fused_equals_two_cross_entropies_in_float64(n, d, scale):
    g = torch.Generator().manual_seed(n * 1000 + d)
    results = []
    for fn in (clip_contrastive, fused_clip_contrastive):
        x = F.normalize(torch.randn(n, d, generator=g.manual_seed(1), dtype=torch.float64), dim=1).requires_grad_()
        y = F.normalize(torch.randn(n, d, generator=g.manual_seed(2), dtype=torch.float64), dim=1).requires_grad_()
        log_scale = torch.tensor(scale, dtype=torch.float64).log().requires_grad_()
        loss = fn((log_scale.exp() * x) @ y.T)
        loss.backward()
        results.append((loss.detach(), x.grad, y.grad, log_scale.grad))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (a, b)


def test_fused_handles_extreme_logits_and_matches_in_float32():
    logits = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0], [0.0, 99.0, -3.0]], requires_grad=True)
    ref = logits.detach().clone().requires_grad_()
    fused_clip_contrastive(logits).backward()
    clip_contrastive(ref).backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.allclose(logits.grad, ref.grad, atol=1e-6)


def test_gradcheck():
    logits = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused_clip_contrastive, (logits,))


def test_clip_loss_keeps_the_unfused_form_until_its_job_ids_change():
    """Same value; and bit for bit the two cross-entropies in float32 (stored numbers never change
    under an unchanged job id: the fused form waits for the next regeneration)."""
    loss = harness.create_loss("clip")
    g32 = torch.Generator().manual_seed(1)
    a = F.normalize(torch.randn(64, 16, generator=g32), dim=1)
    b = F.normalize(torch.randn(64, 16, generator=g32), dim=1)
    assert torch.equal(loss(a, b)["contrastive"], clip_contrastive((loss.scale() * a) @ b.T))
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(32, 8, generator=g, dtype=torch.float64), dim=1)
    y = F.normalize(torch.randn(32, 8, generator=g, dtype=torch.float64), dim=1)
    got = loss(x, y)["contrastive"]
    want = clip_contrastive((loss.scale().double() * x) @ y.T)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
