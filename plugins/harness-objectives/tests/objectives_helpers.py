"""Inputs shared by the tests: seeded unit-norm pairs and the extras each loss declares."""

import torch

SHAPES = [(2, 3), (5, 8), (16, 32)]
NAMES = ["cloob", "dhel", "hn_nce", "ifm", "vicreg", "barlow_twins", "clip_cosine_temperature", "negclip"]


def unit_rows(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (x / x.norm(dim=1, keepdim=True)).to(dtype)


def raw_rows(n, d, seed, dtype=torch.float64):
    """Unnormalised projections: per-column scales and offsets, so the variance/covariance terms are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    scale = 0.3 + 1.5 * torch.rand(d, generator=g, dtype=torch.float64)
    offset = torch.randn(d, generator=g, dtype=torch.float64)
    mix = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
    return ((torch.randn(n, d, generator=g, dtype=torch.float64) @ mix) * scale + offset).to(dtype)


def inputs_for(name, n, d, seed=0, dtype=torch.float64, k=3, step=37):
    """(image_features, text_features, extras) for loss ``name``: the extras it declares, synthesised."""
    x, y = unit_rows(n, d, seed, dtype), unit_rows(n, d, seed + 1, dtype)
    # make some pairs similar, as after training, so positives are not all near 0
    y = ((x + y) / 2).to(torch.float64)
    y = (y / y.norm(dim=1, keepdim=True)).to(dtype)
    extras = {}
    if name in ("vicreg", "barlow_twins"):
        extras["image_raw"] = raw_rows(n, d, seed + 2, dtype)
        extras["text_raw"] = (extras["image_raw"].double() * 0.5 + 0.8 * raw_rows(n, d, seed + 3)).to(dtype)
    if name == "clip_cosine_temperature":
        extras.update(step=step, total_steps=1000)
    if name == "negclip":
        neg = unit_rows(n * k, d, seed + 4).view(n, k, d)
        extras["text_negatives"] = ((neg + y.double()[:, None, :]) / torch.linalg.norm(neg + y.double()[:, None, :], dim=2, keepdim=True)).to(dtype)
    return x, y, extras


def total(terms):
    assert isinstance(terms, dict) and terms
    return sum(terms.values())


# ------------------------------------------------------------------------------- contract v3

#: the losses that use the extras of contract v3 (index and setup, caption_group, momentum towers)
V3_NAMES = ["sogclr", "unicl", "albef_itc"]


def v3_inputs(name, n, d, seed=0, dtype=torch.float64, dataset_size=None):
    """(image_features, text_features, extras) for a v3 loss: the extras it declares, synthesised.

    ``index``: n distinct rows of a split of ``dataset_size`` pairs (default 2n + 1, so consecutive
    batches revisit rows); ``caption_group``: about n/3 groups; the momentum features: unit-norm
    perturbations of the features (as an EMA tower's output near the online one).
    """
    x, y, _ = inputs_for("", n, d, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(1000 + seed)
    extras = {}
    if name == "sogclr":
        size = dataset_size if dataset_size is not None else 2 * n + 1
        extras["index"] = torch.randperm(size, generator=g)[:n]
    if name == "unicl":
        extras["caption_group"] = torch.randint(0, max(2, n // 3), (n,), generator=g)
    if name == "albef_itc":
        for key, base in (("image_momentum", x), ("text_momentum", y)):
            m = base.double() + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
            extras[key] = (m / m.norm(dim=1, keepdim=True)).to(dtype)
    return x, y, extras


def build_v3(name, dataset_size=64, **params):
    """The registered loss ``name`` built with ``params`` and, where it has one, ``setup(dataset_size)`` called."""
    import harness

    loss = harness.create_loss(name, **params)
    if hasattr(loss, "setup"):
        loss.setup(dataset_size)
    return loss
