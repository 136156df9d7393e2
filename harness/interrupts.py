"""Tell the user's Ctrl-C or SIGTERM apart from a plugin that raises ``KeyboardInterrupt``/``SystemExit``.

While a suite runs, ``signals()`` installs handlers for SIGINT and SIGTERM that remember the signal
before raising (``KeyboardInterrupt``, ``SystemExit(128 + signum)``). A job that ends with one of
those exceptions stops the suite only when a signal really arrived (``is_user_stop``); otherwise a
plugin raised it, and it is that job's failure like any other. Outside ``signals()`` (``run_job``
called from Python) a ``KeyboardInterrupt`` is always taken as the user's.

``signals(defer=True)`` only records the signal; the code raises it with ``check()`` at points of
its choosing. The Ray driver needs this: an exception raised by a handler while Ray's C++ core is
waiting (``ray.wait``, ``ray.get``) reaches Ray as an "intentional system exit" instead of our code.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_received: list[int] = []
_active: list[bool] = []  # one entry per open ``signals()`` block: whether it defers
_pending: list[int] = []  # signals received in a deferring block and not yet raised by ``check()``


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _handler(signum, frame):
    _received.append(signum)
    if _active and _active[-1]:
        _pending.append(signum)
        return
    _raise(signum)


def check() -> None:
    """Raise the first signal a deferring ``signals()`` block received, if any (then forget it)."""
    if _pending:
        signum = _pending[0]
        _pending.clear()
        _raise(signum)


@contextlib.contextmanager
def signals(defer: bool = False) -> Iterator[None]:
    """Handle SIGINT and SIGTERM as above while the block runs (main thread only; else a no-op).

    Nesting re-installs the handlers (e.g. after ``ray.init`` replaced them) and keeps what the
    outer block received. With ``defer`` a signal is raised by ``check()``, or when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if not _active:  # an outer block's signals still count inside a nested one (re-installed after ray.init)
        _received.clear()
    _active.append(defer)
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
    except BaseException:
        _pending.clear()  # the block ends with an exception already: it is not replaced
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _active.pop()
    check()  # a signal that arrived after the block's last check


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
