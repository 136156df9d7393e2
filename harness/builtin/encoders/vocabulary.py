"""A token embedding whose trainable rows are only the tokens the job reads.

open_clip's text tower embeds tokens with an ``nn.Embedding`` of the whole BPE vocabulary (49,408
rows): 98% of ``harness-tiny-cnn``'s parameters, of which a shapes world reads a few dozen rows.
Yet every step, gradient clipping and AdamW walk all of them. ``CompactTokenEmbedding`` keeps as
its parameter (``weight``, the same name and place in the model, so the same optimizer group)
only ``rows`` slots, given to tokens as they are first read, plus slot 0, a *sentinel*.

The maths of the full table, row for row: a row no step has touched has zero gradient and zero
moments, so fused AdamW only decays it, ``w <- w * (1 - lr * wd)`` in float32 each step. The
sentinel is such a row held at 1.0: each forward reads the factor the last step applied (and
puts 1.0 back), so a token read for the first time at step t gets its initial row multiplied by
the factors of steps 1..t-1 in order: the value the full table would hold. From then on its slot
gets the same gradient (the embedding's backward adds the same rows in the same order) and the
same AdamW update. Clipping sees the same nonzero gradients (tested bit-equal at 1 and 2
threads). ``state_dict`` gives the full table (a checkpoint is the dense model's); loading a full
table starts afresh from it.

Limits: the exactness rests on CPU fused AdamW's decay being that one float32 multiplication
(``tests/test_vocabulary.py`` checks it on this torch) and on one optimizer step at most between
two forwards (true of the harness's trainer). Reading more than ``rows`` distinct tokens while
training raises; in eval mode or without gradient, extra tokens are served without a slot.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class CompactTokenEmbedding(nn.Module):
    """Drop-in for ``nn.Embedding(V, d)`` with ``rows`` trainable slots (see the module docstring)."""

    def __init__(self, embedding: nn.Embedding, rows: int) -> None:
        super().__init__()
        full = embedding.weight.detach()
        self.num_embeddings, self.embedding_dim = full.shape
        self.rows = int(rows)
        self.register_buffer("initial", full.clone(), persistent=False)  # rows before any step
        self.register_buffer("slot_of", torch.zeros(self.num_embeddings, dtype=torch.long, device=full.device),
                             persistent=False)  # 0: no slot yet
        self.weight = nn.Parameter(torch.zeros(self.rows + 1, self.embedding_dim, dtype=full.dtype, device=full.device),
                                   requires_grad=embedding.weight.requires_grad)
        self.ids: list[int] = []  # the token of slot i + 1
        self.factors: list[torch.Tensor] = []  # the decay factor of each step seen, in order
        with torch.no_grad():
            self.weight[0] = 1.0
        self._register_state_dict_hook(_full_state)
        self._register_load_state_dict_pre_hook(_load_full, with_module=True)

    def observe(self) -> None:
        """Record the decay the optimizer applied since the last call (the sentinel's value) and reset it."""
        with torch.no_grad():
            sentinel = self.weight[0]
            factor = sentinel[0].clone()
            if not bool((sentinel == factor).all()):
                raise RuntimeError("the token embedding's sentinel row was changed unevenly: not a plain weight decay")
            if float(factor) != 1.0:
                self.factors.append(factor)
                sentinel.fill_(1.0)

    def replayed(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows of tokens ``ids`` as the full table holds them now (initial row times each factor, in order)."""
        values = self.initial[ids].clone()
        for factor in self.factors:
            values.mul_(factor)
        return values

    def _assign(self, new: torch.Tensor) -> None:
        start = len(self.ids) + 1
        slots = torch.arange(start, start + len(new), device=self.weight.device)
        with torch.no_grad():
            self.weight[slots] = self.replayed(new)
        self.slot_of[new] = slots
        self.ids += new.tolist()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.observe()
        ids = torch.unique(tokens)
        new = ids[self.slot_of[ids] == 0]
        if len(new) and len(self.ids) + len(new) <= self.rows:
            self._assign(new)
        elif len(new):
            if self.training and torch.is_grad_enabled() and self.weight.requires_grad:
                raise RuntimeError(f"the text tower read more than token_rows={self.rows} distinct tokens while training; "
                                   f"raise token_rows (or leave it unset for the full table)")
            extra = torch.cat([self.weight, self.replayed(new)])  # served without a slot, for this call
            index = self.slot_of.clone()
            index[new] = torch.arange(len(self.weight), len(extra), device=index.device)
            return F.embedding(index[tokens], extra)
        return F.embedding(self.slot_of[tokens], self.weight)

    def full_table(self) -> torch.Tensor:
        """The (V, d) table of the equivalent ``nn.Embedding``, every row as it would be now."""
        self.observe()
        with torch.no_grad():
            table = self.replayed(torch.arange(self.num_embeddings, device=self.initial.device))
            if self.ids:
                table[torch.tensor(self.ids, device=table.device)] = self.weight[1 : len(self.ids) + 1]
        return table

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rows={self.rows}, used={len(self.ids)}"


def _full_state(module: CompactTokenEmbedding, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    state[prefix + "weight"] = module.full_table()


def _load_full(module: CompactTokenEmbedding, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """A full (V, d) table loaded into the module: it becomes the initial table, no slot given yet."""
    key = prefix + "weight"
    table = state.get(key)
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (module.num_embeddings, module.embedding_dim):
        return  # the default loader reports the mismatch
    with torch.no_grad():
        module.initial.copy_(table)
        module.slot_of.zero_()
        module.weight.zero_()
        module.weight[0] = 1.0
    module.ids, module.factors = [], []
    state[key] = module.weight.detach().clone()


def compact_token_embedding(model: nn.Module, rows: int) -> CompactTokenEmbedding | None:
    """Replace ``model.token_embedding`` (open_clip's ``CLIP``; or ``model.text.token_embedding``) by a
    ``CompactTokenEmbedding`` of ``rows`` slots, in place (same name, same position). None when the
    model has no such embedding."""
    owner = model if isinstance(getattr(model, "token_embedding", None), nn.Embedding) else getattr(model, "text", None)
    embedding = getattr(owner, "token_embedding", None)
    if not isinstance(embedding, nn.Embedding):
        return None
    compact = CompactTokenEmbedding(embedding, rows)
    owner.token_embedding = compact  # the key exists: its position among the parameters is kept
    if owner is not model and getattr(model, "token_embedding", None) is embedding:
        model.token_embedding = compact
    return compact
