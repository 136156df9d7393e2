"""harness.interrupts: immediate and deferred handling of SIGINT/SIGTERM inside ``signals()``."""

from __future__ import annotations

import os
import signal

import pytest

from harness import interrupts


def _send(sig: int) -> None:
    os.kill(os.getpid(), sig)  # the handler runs in the main thread before the next bytecode


def test_an_immediate_block_raises_at_once_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    ran_on = []
    with pytest.raises(SystemExit) as exc:
        with interrupts.signals():
            _send(signal.SIGTERM)
            ran_on.append(True)  # never reached
    assert exc.value.code == 128 + signal.SIGTERM and ran_on == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_deferred_signal_waits_for_check_and_is_raised_once():
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.signals(defer=True):
            _send(signal.SIGINT)
            seen.append("after the signal")  # the handler only recorded it
            assert interrupts.received() == signal.SIGINT
            interrupts.check()
            seen.append("after check")  # never reached
    assert seen == ["after the signal"]
    interrupts.check()  # nothing pending any more: no second raise


def test_a_deferred_signal_not_yet_checked_is_raised_when_the_block_ends():
    with pytest.raises(SystemExit) as exc:
        with interrupts.signals(defer=True):
            _send(signal.SIGTERM)
    assert exc.value.code == 128 + signal.SIGTERM


def test_a_block_that_ends_with_its_own_exception_keeps_it_and_drops_the_pending_signal():
    with pytest.raises(ValueError):
        with interrupts.signals(defer=True):
            _send(signal.SIGTERM)
            raise ValueError("the block's own error")
    interrupts.check()  # the pending SIGTERM was dropped with the block


def test_a_deferring_block_inside_an_immediate_one_defers_and_the_outer_still_counts_it():
    with pytest.raises(SystemExit):
        with interrupts.signals():
            with interrupts.signals(defer=True):
                _send(signal.SIGTERM)
                assert interrupts.is_user_stop(SystemExit(143))
            # the inner block re-raised at its end
    assert interrupts.received() == signal.SIGTERM
