"""Independent float64 transcriptions of the eight reference formulas, for the tests.

Written from the papers' and reference repositories' formulas with plain Python loops and
elementary tensor ops (exp, log, sums), in the order the references compute them, and sharing
nothing with ``harness_objectives`` (no log-sum-exp rewriting, no helpers from the package). Slow
and direct on purpose: they are meant to be obviously right for the small inputs the tests use.
Each takes float64 tensors and returns a float64 scalar tensor (differentiable through autograd).
"""

import math

import torch


def _dot(a, b):
    return (a * b).sum()


def _cross_entropy(logits, target):
    """-log softmax(logits)[target] for one row of logits (a 1-d tensor)."""
    m = logits.max().detach()
    return -(logits[target] - m - torch.log(torch.exp(logits - m).sum()))


# ---------------------------------------------------------------------------------------- cloob


def _hopfield(state, stored, beta):
    """ml-jku/cloob methods.py hopfield(): softmax(beta * state @ stored^T) @ stored, rows normalised."""
    rows = []
    for i in range(state.shape[0]):
        w = torch.stack([torch.exp(beta * _dot(state[i], stored[j])) for j in range(stored.shape[0])])
        w = w / w.sum()
        r = (w[:, None] * stored).sum(dim=0)
        rows.append(r / torch.sqrt((r * r).sum()))
    return torch.stack(rows)


def _info_loob(a, b, inv_tau):
    """methods.py infoLOOB_loss: tau * mean_i(-a_i.b_i/tau + log sum_{j!=i} exp(a_i.b_j/tau))."""
    tau = 1.0 / inv_tau
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        positive = _dot(a[i], b[i]) / tau
        negatives = torch.log(sum(torch.exp(_dot(a[i], b[j]) / tau) for j in range(n) if j != i))
        total = total + (-positive + negatives)
    return tau * total / n


def cloob(x, y, inv_tau=30.0, hopfield_scale=8.0):
    p_xx = _hopfield(x, x, hopfield_scale)  # state image, stored image
    p_yy = _hopfield(y, y, hopfield_scale)
    p_xy = _hopfield(y, x, hopfield_scale)  # state text, stored image
    p_yx = _hopfield(x, y, hopfield_scale)  # state image, stored text
    return _info_loob(p_xx, p_xy, inv_tau) + _info_loob(p_yy, p_yx, inv_tau)


# ----------------------------------------------------------------------------------------- dhel


def dhel(x, y, temperature=0.3):
    """DHEL-KCL losses.py DHEL(include_augs=True): -log(pos / (sum_{j!=i} e^{x.x/t} * sum_{j!=i} e^{y.y/t}))."""
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        pos = torch.exp(_dot(x[i], y[i]) / temperature)
        anchor = sum(torch.exp(_dot(x[i], x[j]) / temperature) for j in range(n) if j != i)
        positive_view = sum(torch.exp(_dot(y[i], y[j]) / temperature) for j in range(n) if j != i)
        total = total - torch.log(pos / (anchor * positive_view))
    return total / n


# --------------------------------------------------------------------------------------- hn_nce


def _hn_nce_direction(sim, alpha, beta):
    """-mean_i log(e^{S_ii} / (alpha e^{S_ii} + sum_{j!=i} w_ij e^{S_ij})), weights over row i's negatives."""
    n = sim.shape[0]
    total = 0.0
    for i in range(n):
        normaliser = sum(torch.exp(beta * sim[i, k]) for k in range(n) if k != i)
        denominator = alpha * torch.exp(sim[i, i])
        for j in range(n):
            if j != i:
                w = (n - 1) * torch.exp(beta * sim[i, j]) / normaliser
                denominator = denominator + w * torch.exp(sim[i, j])
        total = total - torch.log(torch.exp(sim[i, i]) / denominator)
    return total / n


def hn_nce(x, y, temperature=0.07, alpha=1.0, beta=0.5):
    n = x.shape[0]
    sim = torch.stack([torch.stack([_dot(x[i], y[j]) / temperature for j in range(n)]) for i in range(n)])
    return _hn_nce_direction(sim, alpha, beta) + _hn_nce_direction(sim.T, alpha, beta)


# ------------------------------------------------------------------------------------------ ifm


def ifm(x, y, temperature=0.07, epsilon=0.1, alpha=1.0):
    """IFM adv_builder.py + main_moco.py with in-batch negatives, both directions averaged (CLIP)."""
    n = x.shape[0]
    losses = []
    for anchors, others in ((x, y), (y, x)):  # image-to-text rows, then text-to-image
        orig, adv = 0.0, 0.0
        for i in range(n):
            sims = torch.stack([_dot(anchors[i], others[j]) for j in range(n)])
            perturbed = torch.stack([sims[j] - epsilon if j == i else sims[j] + epsilon for j in range(n)])
            orig = orig + _cross_entropy(sims / temperature, i)
            adv = adv + _cross_entropy(perturbed / temperature, i)
        losses.append((orig / n + alpha * adv / n) / (1 + alpha))
    return (losses[0] + losses[1]) / 2


# --------------------------------------------------------------------------------------- vicreg


def _off_diagonal(m):
    """vicreg / barlowtwins off_diagonal(): the flattened off-diagonal entries of a square matrix."""
    n, _ = m.shape
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg(za, zb, sim_weight=25.0, var_weight=25.0, cov_weight=1.0):
    """facebookresearch/vicreg main_vicreg.py VICReg.forward (lines 194-220), written out."""
    n, d = za.shape
    repr_loss = ((za - zb) ** 2).sum() / (n * d)
    std_loss = 0.0
    cov_loss = 0.0
    for z in (za, zb):
        mean = z.sum(dim=0) / n
        c = z - mean
        var = (c**2).sum(dim=0) / (n - 1)
        std = torch.sqrt(var + 0.0001)
        std_loss = std_loss + torch.clamp(1 - std, min=0).sum() / d / 2
        cov = torch.zeros(d, d, dtype=z.dtype)
        for i in range(n):
            cov = cov + torch.outer(c[i], c[i])
        cov = cov / (n - 1)
        cov_loss = cov_loss + (_off_diagonal(cov) ** 2).sum() / d
    return sim_weight * repr_loss + var_weight * std_loss + cov_weight * cov_loss


# --------------------------------------------------------------------------------- barlow_twins


def barlow_twins(z1, z2, off_diagonal_weight=0.0051):
    """facebookresearch/barlowtwins main.py BarlowTwins.forward: a real BatchNorm1d(affine=False), train mode."""
    n, d = z1.shape
    bn = torch.nn.BatchNorm1d(d, affine=False).to(torch.float64).train()
    c = bn(z1).T @ bn(z2)
    c = c / n
    on_diag = ((torch.diagonal(c) - 1) ** 2).sum()
    off_diag = (_off_diagonal(c) ** 2).sum()
    return on_diag + off_diagonal_weight * off_diag


# ---------------------------------------------------------------------- clip_cosine_temperature


def cosine_tau(step, temperature_min=0.1, temperature_max=1.0, period_steps=400):
    """Annusha/temperature_schedules train_simCLR.py line 399, with t_max = period / 2."""
    t_max = period_steps / 2
    return temperature_min + 0.5 * (temperature_max - temperature_min) * (1 + math.cos(math.pi * step / t_max))


def clip(x, y, temperature):
    """CLIP's symmetric InfoNCE at a fixed temperature, row by row."""
    n = x.shape[0]
    i2t = sum(_cross_entropy(torch.stack([_dot(x[i], y[j]) for j in range(n)]) / temperature, i) for i in range(n)) / n
    t2i = sum(_cross_entropy(torch.stack([_dot(y[i], x[j]) for j in range(n)]) / temperature, i) for i in range(n)) / n
    return (i2t + t2i) / 2


def clip_cosine_temperature(x, y, step, temperature_min=0.1, temperature_max=1.0, period_steps=400):
    return clip(x, y, cosine_tau(step, temperature_min, temperature_max, period_steps))


# -------------------------------------------------------------------------------------- negclip


def negclip(x, y, negatives, temperature=0.07):
    """vinid/neg_clip loss.py ClipLoss.forward (single process): texts = [captions; negatives]."""
    n, k, d = negatives.shape
    texts = [y[i] for i in range(n)] + [negatives[i, m] for i in range(n) for m in range(k)]
    scale = 1.0 / temperature
    i2t = sum(_cross_entropy(torch.stack([scale * _dot(x[i], t) for t in texts]), i) for i in range(n)) / n
    # logits_per_text[:len(logits_per_image)]: the positive captions' rows only
    t2i = sum(_cross_entropy(torch.stack([scale * _dot(texts[i], x[j]) for j in range(n)]), i) for i in range(n)) / n
    return (i2t + t2i) / 2
