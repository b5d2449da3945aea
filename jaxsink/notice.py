"""The preemption notice: a SIGTERM caught from a `jaxsink` process's first lines (standard library only).

Spot reclaims and maintenance events send SIGTERM and leave seconds; with the default action the process
dies wherever it is. `jaxsink.entry` installs this handler before it imports anything else, so from then on
a SIGTERM only sets `NOTICE`; `jaxsink.train.preemption` reads it at each step boundary (and hands it to
JAX's preemption sync manager in multi-process runs). This module imports nothing from jaxsink or from
outside the standard library: importing it must cost microseconds.
"""
from __future__ import annotations

import signal
import threading

NOTICE = threading.Event()   # set by the SIGTERM handler


def on_sigterm(signum, frame) -> None:   # noqa: ARG001 -- signal handler signature
    NOTICE.set()


def install() -> bool:
    """Catch SIGTERM as a notice (main thread only; True if this call installed it)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is on_sigterm:
        return False
    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def then_ignore(command) -> int:
    """`command()`, after which SIGTERM is ignored for the rest of the process: the work is saved and the exit
    status decided, and teardown (atexit handlers, threads, finalisation, where CPython puts the default action
    back in place of a Python handler) must not turn it into status -15. `SIG_IGN` survives finalisation."""
    try:
        return command()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def message_before_start() -> str:
    return "preempted before training started: nothing was saved or needed saving; re-run the same command"
