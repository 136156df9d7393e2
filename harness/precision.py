"""Numeric precision of a job: the names, the rule that picks one, and the autocast context.

``train`` and ``embed`` both run the towers under ``autocast(precision, device)``; encoders and
suites name precisions with ``Precision``.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def resolve_precision(requested: str | None, device: torch.device) -> str:
    """fp32 on CPU always; on CUDA the requested bf16/fp16 autocast (default fp32)."""
    if device.type != "cuda":
        return "fp32"
    return requested or "fp32"


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` to bf16/fp16 on ``device``, or a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
