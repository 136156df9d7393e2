"""Tell the user's Ctrl-C or SIGTERM apart from a plugin that raises ``KeyboardInterrupt``/``SystemExit``.

While a suite runs, ``signals()`` installs handlers for SIGINT and SIGTERM that remember the signal
before raising (``KeyboardInterrupt``, ``SystemExit(128 + signum)``). A job that ends with one of
those exceptions stops the suite only when a signal really arrived (``is_user_stop``); otherwise a
plugin raised it, and it is that job's failure like any other. Outside ``signals()`` (``run_job``
called from Python) a ``KeyboardInterrupt`` is always taken as the user's.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_received: list[int] = []
_active: list[bool] = []


def _handler(signum, frame):
    _received.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as above while the block runs (main thread only; else a no-op).

    Nesting re-installs the handlers (e.g. after ``ray.init`` replaced them) and keeps what the
    outer block received.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if not _active:  # an outer block's signals still count inside a nested one (re-installed after ray.init)
        _received.clear()
    _active.append(True)
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _active.pop()


def received() -> int | None:
    """The first signal received inside ``signals()``, if any."""
    return _received[0] if _received else None


def is_user_stop(exc: BaseException) -> bool:
    """Whether ``exc`` stops the whole run (a real signal) rather than failing one job."""
    if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False
    if _active:
        return bool(_received)
    return isinstance(exc, KeyboardInterrupt)
