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


def message_before_start() -> str:
    return "preempted before training started: nothing was saved or needed saving; re-run the same command"
