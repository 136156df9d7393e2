"""What every leaderboard page inlines: its style sheet and sort script (files in ``static/``), and
the Content-Security-Policy that allows exactly those two (by hash) and ``data:`` images."""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files

CSS = files("harness.leaderboard").joinpath("static/page.css").read_text(encoding="utf-8")
JS = files("harness.leaderboard").joinpath("static/sort.js").read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy() -> str:
    """No network, ``data:`` images only, and only this page's own inline style and script."""
    return f"default-src 'none'; img-src data:; style-src {_sha256(CSS)}; script-src {_sha256(JS)}"
