"""Result keys: evaluation results are joined with dots into leaderboard columns, so keys hold none."""

from __future__ import annotations


def safe_key(name: str) -> str:
    """A set or metric name usable as a result key: dots become underscores."""
    return str(name).replace(".", "_")


def number_key(prefix: str, value: float) -> str:
    """``number_key("lambda", 0.5) == "lambda_0_5"``, ``number_key("delta", -1.0) == "delta_m1"``."""
    text = f"{float(value):g}".replace("-", "m").replace(".", "_")
    return f"{prefix}_{text}"
