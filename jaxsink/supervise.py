"""A multi-process job whose peer died ends with one clear line, not a C++ stack trace (or a hang).

When one process of a `jax.distributed` job dies (host failure, OOM kill), JAX's coordination service
notices within the heartbeat timeout (`--heartbeat-timeout`, JAX's `heartbeat_timeout_seconds`) and every
survivor's client aborts the process with a glog FATAL line and a stack trace, wherever its main thread was
(inside a collective, an Orbax barrier, a checkpoint write). So a survivor never hangs; but the abort cannot
be caught in Python. The CLI therefore runs a multi-process command in a child process (`JAXSINK_SUPERVISED`
set) and relays its output; when the child is aborted by the distributed service, the parent prints

    jaxsink: error: the distributed job lost a process (...): this process stopped; re-run the same command
    on every host to resume from the last complete checkpoint

and exits with status 3. SIGTERM (a preemption notice) and SIGINT are passed on to the child.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

ENV = "JAXSINK_SUPERVISED"
LOST_PEER_STATUS = 3
_FATAL = "JAX distributed service detected fatal errors"
_GLOG = re.compile(r"^[EWF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ (coordination_service|client|preemption_sync)")


def supervised() -> bool:
    return bool(os.environ.get(ENV))


def run_child(argv: list[str]) -> int:
    """Run `jaxsink ARGV` as a child; relay stdout and stderr; one line if the distributed service killed it."""
    child = subprocess.Popen([sys.executable, "-m", "jaxsink.cli", *argv], env={**os.environ, ENV: "1"},
                             stderr=subprocess.PIPE, text=True, errors="replace")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    held, reason, fatal = [], [], False
    for line in child.stderr:
        if fatal:
            if line.startswith(("RPC:", "***", "    @")):
                break                    # the rest is the abort's stack trace
            reason.append(line)
        elif _FATAL in line:
            fatal = True
            reason.append(line.split("absl::Status:", 1)[-1])
        elif held or _GLOG.match(line):
            held.append(line)            # from the service's first error line on: shown unless it aborts
        else:
            sys.stderr.write(line)
            sys.stderr.flush()
    for _ in child.stderr:
        pass
    rc = child.wait()
    if fatal and rc != 0:
        detail = " ".join("".join(reason).split())[:300]
        print(f"jaxsink: error: the distributed job lost a process ({detail}): this process stopped; re-run the "
              "same command on every host to resume from the last complete checkpoint", file=sys.stderr)
        return LOST_PEER_STATUS
    sys.stderr.writelines(held)
    return rc if rc >= 0 else 128 - rc
