"""Preemption: a SIGTERM (spot reclaim, maintenance event) ends a run cleanly at the next step boundary.

Every process saves a checkpoint of the same step, waits for it, and exits 0 with one line
(`Preempted`); re-running the same command resumes from that checkpoint exactly (the data of step s is a
pure function of (seed, s)).

One process: a Python SIGTERM handler sets a flag, read at each step boundary. Several processes
(`jax.distributed`): JAX's preemption sync manager owns SIGTERM (its C++ notifier replaces any Python handler
when `jax.distributed.initialize` runs) and agrees on the step at which all processes save, which Orbax
exposes as `CheckpointManager.reached_preemption(step)`; MaxText saves and stops when it returns True, as
here. A SIGTERM that arrived before `initialize` (caught by the early handler) is re-sent to the process so
that the sync manager sees it. The handler and its flag live in `jaxsink.notice`, which `jaxsink.entry` (the
console script) installs before anything heavy is imported; a one-process notice that came before training
started ends the command at once (`stop_if_noticed`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal

from jaxsink.notice import NOTICE as _notice   # set by the SIGTERM handler (one-process runs, and before
from jaxsink.notice import install as install_handler   # jax.distributed starts); jaxsink.entry installs it first


class Preempted(Exception):
    """The run saved a checkpoint at a step boundary after a preemption notice; one-line message, exit 0."""


class _QuietSyncPoint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Reached preemption sync point" not in str(record.msg)


class PreemptionWatch:
    """`reached(step)`: whether every process should save `step` and stop (called at every step boundary,
    with the same step on every process)."""

    def __init__(self, store):
        import jax   # not at module level: the CLI installs the handler before the slow imports
        self._store = store
        self.distributed = jax.process_count() > 1
        if self.distributed:   # Orbax warns once per call and thread at the sync point; the one line is ours
            logging.getLogger("absl").addFilter(_QuietSyncPoint())
        if self.distributed and _notice.is_set():
            _notice.clear()
            os.kill(os.getpid(), signal.SIGTERM)   # now JAX's notifier handles SIGTERM: hand it the early notice

    def reached(self, step: int) -> bool:
        if self.distributed:
            return bool(self._store.reached_preemption(step))
        return _notice.is_set()


@contextlib.contextmanager
def _notice_while(active: bool):
    previous = signal.getsignal(signal.SIGTERM)
    installed = active and install_handler()
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)
            _notice.clear()


def stop_if_noticed() -> None:
    """Before training starts (one process): a notice already here ends the command with one line and exit 0;
    nothing is half-written and the same command then runs normally. A multi-process job instead hands the
    notice to JAX's sync manager (`PreemptionWatch`), so that every process stops at the same step."""
    if _notice.is_set():
        from jaxsink.notice import message_before_start
        raise Preempted(message_before_start())


def early_notice():
    """`cli.main`'s whole run: SIGTERM is a notice. Under the `jaxsink` command the handler is already there
    (`jaxsink.entry`, before the imports) and stays; called in-process, as the tests do, the previous handler
    is put back after, so that the caller's SIGTERM is left alone."""
    return _notice_while(True)


def sigterm_as_notice():
    """`train()`: SIGTERM sets the notice (one-process runs); the previous handler is put back after."""
    import jax
    return _notice_while(jax.process_count() == 1)


def message(step: int, directory) -> str:
    return (f"preempted: saved the checkpoint of step {step} in {directory}; re-run the same command to resume "
            "from it")
