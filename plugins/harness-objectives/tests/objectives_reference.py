"""Independent float64 transcriptions of the reference formulas, for the tests.

Written from the papers' and reference repositories' formulas with plain Python loops and
elementary tensor ops (exp, log, sums), in the order the references compute them, and sharing
nothing with ``harness_objectives`` (no log-sum-exp rewriting, no helpers from the package). Slow
and direct on purpose: they are meant to be obviously right for the small inputs the tests use.
The first eight take float64 tensors and return a float64 scalar tensor (differentiable through
autograd). The three of contract v3 (``sogclr``, ``unicl``, ``albef_itc``, at the end) are numpy,
line by line after their reference code, and carry their state across calls as the references'
buffers do; they return the terms and, in closed form, the gradients of the loss.
"""

import math

import numpy as np
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


# =========================================================================== contract v3 (numpy)


def _softmax_rows(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax_rows(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


class SogCLRReference:
    """zhqiu/contrastive-learning-iSogCLR @c20903b, bimodal_exps/models/losses.py lines 61-136 (``SogCLR_Loss``).

    The buffers ``s_I``, ``s_T``, ``b_I``, ``b_T`` of the reference (lines 69-72), one entry per
    training pair; both addressed by the pair's index (the reference's ``image_ids``/``text_ids``).
    ``step`` follows lines 89-134 statement by statement; an index listed twice takes its last
    value (a Python loop writes the rows in order). Returns (image_loss, text_loss, grad_x, grad_y)
    with the gradients of image_loss + text_loss in closed form (the weights are constants: the
    reference detaches them, lines 99-100).
    """

    def __init__(self, dataset_size, temperature=0.01, gamma=0.8):
        self.s_I = np.zeros(dataset_size)
        self.s_T = np.zeros(dataset_size)
        self.b_I = np.zeros(dataset_size)
        self.b_T = np.zeros(dataset_size)
        self.gamma = gamma
        self.temperature = temperature
        self.eps = 1e-10

    @staticmethod
    def _write(buffer, ids, values):
        for k, i in enumerate(ids):  # in order: the last write wins
            buffer[i] = values[k]

    def step(self, image_features, text_features, ids):
        x, y, ids = np.asarray(image_features, dtype=np.float64), np.asarray(text_features, dtype=np.float64), list(ids)
        n = x.shape[0]
        sim = np.array([[float(np.dot(x[i], y[j])) for j in range(n)] for i in range(n)])  # line 89
        diag_sim = np.diagonal(sim).copy()
        image_diffs = sim - diag_sim[:, None]  # line 95
        text_diffs = sim - diag_sim[None, :]  # line 97
        image_diffs_d_temps = image_diffs / self.temperature  # lines 99-100 (detached)
        text_diffs_d_temps = text_diffs / self.temperature

        old_b_I = self.b_I[ids].copy()  # lines 103-105
        new_b_I = np.maximum(image_diffs_d_temps, np.tile(old_b_I[:, None], (1, n)))
        self._write(self.b_I, ids, new_b_I.max(axis=1))
        old_b_T = self.b_T[ids].copy()  # lines 107-109
        new_b_T = np.maximum(text_diffs_d_temps, np.tile(old_b_T[None, :], (n, 1)))
        self._write(self.b_T, ids, new_b_T.max(axis=0))

        exp_image_diffs = np.exp(image_diffs_d_temps - self.b_I[ids][:, None])  # lines 111-112
        exp_text_diffs = np.exp(text_diffs_d_temps - self.b_T[ids][None, :])
        g_I = exp_image_diffs.sum(axis=1) / (n - 1)  # lines 114-115
        g_T = exp_text_diffs.sum(axis=0) / (n - 1)

        # lines 117-118
        self._write(self.s_I, ids, (1.0 - self.gamma) * self.s_I[ids] * np.exp(old_b_I - self.b_I[ids]) + self.gamma * g_I)
        self._write(self.s_T, ids, (1.0 - self.gamma) * self.s_T[ids] * np.exp(old_b_T - self.b_T[ids]) + self.gamma * g_T)
        weights_image = exp_image_diffs / (self.s_I[ids][:, None] + self.eps)  # lines 120-124
        weights_text = exp_text_diffs / (self.s_T[ids][None, :] + self.eps)

        image_loss = (weights_image * image_diffs).sum(axis=1) / (n - 1)  # lines 131-134
        text_loss = (weights_text * text_diffs).sum(axis=0) / (n - 1)

        # d/dx_i sum_j W_ij (x_i.y_j - x_i.y_i) and d/dy_j of it; likewise the text term, V = weights_text
        c = 1.0 / (n * (n - 1))
        w, v = weights_image, weights_text
        grad_x = c * (w @ y - w.sum(axis=1)[:, None] * y + v @ y - v.sum(axis=0)[:, None] * y)
        grad_y = c * (w.T @ x - w.sum(axis=1)[:, None] * x + v.T @ x - v.sum(axis=0)[:, None] * x)
        return image_loss.mean(), text_loss.mean(), grad_x, grad_y


def unicl(image_features, text_features, groups, logit_scale):
    """UniCL (Yang et al. 2022) Eqs. 3-5 with microsoft/UniCL's logits and soft-target cross-entropy.

    ``main.py`` line 175: logits = exp(logit_scale) * x @ y^T (``model/model.py`` line 168);
    timm's ``SoftTargetCrossEntropy`` (``main.py`` line 105): sum(-target * log_softmax) averaged
    over the batch; targets: row i uniform over P(i) = {k : g_k = g_i} (Eq. 3), column j over P(j)
    (Eq. 4); L = L_i2t + L_t2i (Eq. 5). Returns (l_i2t, l_t2i, grad_x, grad_y, grad_logit_scale).
    """
    x, y = np.asarray(image_features, dtype=np.float64), np.asarray(text_features, dtype=np.float64)
    g = [int(v) for v in groups]
    n = x.shape[0]
    tau = math.exp(logit_scale)
    logits = np.array([[tau * float(np.dot(x[i], y[j])) for j in range(n)] for i in range(n)])
    targets = np.array([[1.0 if g[i] == g[j] else 0.0 for j in range(n)] for i in range(n)])
    targets_rows = targets / targets.sum(axis=1, keepdims=True)  # row i: 1/|P(i)| on P(i)
    targets_cols = targets / targets.sum(axis=0, keepdims=True)  # column j: 1/|P(j)| on P(j)
    l_i2t = sum(-(targets_rows[i] * _log_softmax_rows(logits[i : i + 1])[0]).sum() for i in range(n)) / n
    l_t2i = sum(-(targets_cols[:, j] * _log_softmax_rows(logits[:, j][None, :])[0]).sum() for j in range(n)) / n
    # dL/dlogits: (softmax - target) / n per row (image anchors) and per column (text anchors)
    grad_logits = (_softmax_rows(logits) - targets_rows) / n + (_softmax_rows(logits.T) - targets_cols.T).T / n
    grad_x = tau * grad_logits @ y
    grad_y = tau * grad_logits.T @ x
    grad_logit_scale = float((grad_logits * logits).sum())  # d logits / d logit_scale = logits
    return l_i2t, l_t2i, grad_x, grad_y, grad_logit_scale


class AlbefITCReference:
    """salesforce/ALBEF @b9727e4, models/model_pretrain.py lines 102-130 (ITC) and 234-250 (the queue).

    The queues are K x d here, one entry per row (ALBEF's are d x K, one entry per column: the
    same vectors). Enqueued rows are rounded to float32, the queues' precision (ALBEF's buffers are
    float32); the temperature is 1/exp(logit_scale). ``step`` returns
    (itc, grad_x, grad_y, grad_logit_scale) with the gradients in closed form (the targets are
    constants: computed under ``torch.no_grad()``, lines 103-120).
    """

    def __init__(self, image_queue, text_queue, queue_ptr, logit_scale, alpha=0.4):
        self.image_queue = np.array(image_queue, dtype=np.float64)
        self.text_queue = np.array(text_queue, dtype=np.float64)
        self.queue_ptr = int(queue_ptr)
        self.queue_size = self.image_queue.shape[0]
        self.logit_scale = logit_scale
        self.alpha = alpha

    def step(self, image_feat, text_feat, image_feat_m, text_feat_m, alpha=None):
        alpha = self.alpha if alpha is None else alpha
        x, y = np.asarray(image_feat, dtype=np.float64), np.asarray(text_feat, dtype=np.float64)
        xm, ym = np.asarray(image_feat_m, dtype=np.float64), np.asarray(text_feat_m, dtype=np.float64)
        n = x.shape[0]
        temp = 1.0 / math.exp(self.logit_scale)  # ALBEF divides by self.temp
        image_feat_all = np.concatenate([xm, self.image_queue], axis=0)  # line 107 (rows here)
        text_feat_all = np.concatenate([ym, self.text_queue], axis=0)  # line 111

        sim_i2t_m = xm @ text_feat_all.T / temp  # lines 113-114
        sim_t2i_m = ym @ image_feat_all.T / temp
        sim_targets = np.zeros(sim_i2t_m.shape)  # lines 116-117
        for i in range(n):
            sim_targets[i, i] = 1.0
        sim_i2t_targets = alpha * _softmax_rows(sim_i2t_m) + (1 - alpha) * sim_targets  # lines 119-120
        sim_t2i_targets = alpha * _softmax_rows(sim_t2i_m) + (1 - alpha) * sim_targets

        sim_i2t = x @ text_feat_all.T / temp  # lines 122-123
        sim_t2i = y @ image_feat_all.T / temp
        loss_i2t = -(_log_softmax_rows(sim_i2t) * sim_i2t_targets).sum(axis=1).mean()  # lines 125-126
        loss_t2i = -(_log_softmax_rows(sim_t2i) * sim_t2i_targets).sum(axis=1).mean()
        loss_ita = (loss_i2t + loss_t2i) / 2  # line 128

        # gradients: each target row sums to 1, so d(-sum t log softmax(z))/dz = softmax(z) - t
        g_i2t = (_softmax_rows(sim_i2t) - sim_i2t_targets) / (2 * n)
        g_t2i = (_softmax_rows(sim_t2i) - sim_t2i_targets) / (2 * n)
        grad_x = g_i2t @ text_feat_all / temp
        grad_y = g_t2i @ image_feat_all / temp
        grad_logit_scale = float((g_i2t * sim_i2t).sum() + (g_t2i * sim_t2i).sum())

        self._dequeue_and_enqueue(xm, ym)  # line 130
        return loss_ita, grad_x, grad_y, grad_logit_scale

    def _dequeue_and_enqueue(self, image_feats, text_feats):
        """Lines 234-250, one row at a time (so any batch size wraps around the ring)."""
        if self.queue_size == 0:
            return
        ptr = self.queue_ptr
        for r in range(image_feats.shape[0]):
            self.image_queue[(ptr + r) % self.queue_size] = image_feats[r].astype(np.float32)
            self.text_queue[(ptr + r) % self.queue_size] = text_feats[r].astype(np.float32)
        self.queue_ptr = (ptr + image_feats.shape[0]) % self.queue_size
