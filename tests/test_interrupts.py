"""Signals deferred while the model is mid-update, raised where it is whole (no processes needed).

`signal.raise_signal` runs the Python handler before it returns, so each signal lands at a known
moment: no waiting for it to arrive."""
import signal

import pytest

from charstream.cli.interrupts import Interrupts, Terminated


def test_a_signal_inside_a_deferred_block_is_raised_when_it_ends():
    steps = []
    with Interrupts().installed() as interrupts:
        with pytest.raises(Terminated):
            with interrupts.deferred():
                signal.raise_signal(signal.SIGTERM)
                steps.append("the block went on")
            steps.append("not reached")
    assert steps == ["the block went on"]


def test_allowed_inside_deferred_raises_at_once_and_only_one_signal_is_ever_raised():
    with Interrupts().installed() as interrupts:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                with interrupts.allowed():
                    signal.raise_signal(signal.SIGINT)
                    pytest.fail("not interrupted")
        signal.raise_signal(signal.SIGTERM)   # the process is on its way out: only noted now
        assert isinstance(interrupts.pending, Terminated)


def test_iterating_defers_while_computing_and_allows_while_waiting():
    steps = []

    def source(signals):
        yield "a"
        signal.raise_signal(signals.pop())   # a signal while waiting for input: raised there
        yield "b"

    def worker(texts):   # e.g. the trainer: a signal mid-update waits until the update is whole
        for t in texts:
            signal.raise_signal(signal.SIGTERM)
            steps.append(f"updated {t}")
            yield t

    with Interrupts().installed() as interrupts:
        with pytest.raises(Terminated):
            for t in interrupts.deferring(worker(interrupts.allowing_in(source([])))):
                steps.append(f"body {t}")
    assert steps == ["updated a"]
    steps.clear()

    def quiet_worker(texts):
        for t in texts:
            steps.append(f"updated {t}")
            yield t

    with Interrupts().installed() as interrupts:
        with pytest.raises(KeyboardInterrupt):
            for t in interrupts.deferring(quiet_worker(interrupts.allowing_in(source([signal.SIGINT])))):
                steps.append(f"body {t}")
    assert steps == ["updated a", "body a"]
