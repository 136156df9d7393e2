"""Tokens of captions that repeat, tokenized once.

The shapes world's canonical captions (and any dataset's prompts and class names) come back batch
after batch; open_clip's BPE tokenizer cleans, splits and encodes each text every time.
``TokenCache`` keeps each distinct text's row of tokens (least recently used out past ``size``)
and stacks the rows of a batch: the same int64 tensor the tokenizer returns. Only a tokenizer
that encodes each text on its own (open_clip's ``SimpleTokenizer`` without a reduction strategy,
which may be random) is cached; any other is called as it is.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch

DEFAULT_SIZE = 1 << 16  # texts kept: 64k rows of (context_length,) int64, a few MB at open_clip's 77


def cacheable(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` maps each text to its row independently of the others and of any RNG."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:  # pragma: no cover - open_clip is what builds these encoders
        return False
    return isinstance(tokenizer, SimpleTokenizer) and getattr(tokenizer, "reduction_fn", None) is None


class TokenCache:
    """``tokens(texts)``: ``tokenizer(texts)``, with each distinct text's row computed once."""

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor], size: int = DEFAULT_SIZE) -> None:
        self.tokenizer, self.size = tokenizer, int(size)
        self.rows: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts or self.size <= 0:
            return self.tokenizer(texts)
        rows = self.rows
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            fresh = self.tokenizer(missing)
            for text, row in zip(missing, fresh):
                rows[text] = row.clone()  # its own storage: the batch tensor may be large
        out = []
        for text in texts:
            rows.move_to_end(text)
            out.append(rows[text])
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        while len(rows) > max(self.size, len(set(texts))):
            rows.popitem(last=False)
        return torch.stack(out)
