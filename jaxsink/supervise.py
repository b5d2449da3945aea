"""A multi-process job whose peer died ends with one clear line, not a C++ stack trace (or a hang).

When one process of a `jax.distributed` job dies (host failure, OOM kill), JAX's coordination service
notices within the heartbeat timeout (`--heartbeat-timeout`, JAX's `heartbeat_timeout_seconds`) and every
survivor's client aborts the process with a glog FATAL line and a stack trace, wherever its main thread was
(inside a collective, an Orbax barrier, a checkpoint write). So a survivor never hangs; but the abort cannot
be caught in Python, and before it a collective or barrier may fail with a Python traceback (gloo's
connection reset, the service's UNAVAILABLE). The CLI therefore runs a multi-process command in a child
process (`JAXSINK_SUPERVISED` set) and relays its output; when the child stopped for either reason, the
parent prints

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
    """Run `jaxsink ARGV` as a child; relay stdout and stderr; one line if it stopped because a peer died."""
    from jaxsink.notice import NOTICE, message_before_start
    child = subprocess.Popen([sys.executable, "-m", "jaxsink.entry", *argv], env={**os.environ, ENV: "1"},
                             stderr=subprocess.PIPE, text=True, errors="replace")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    if NOTICE.is_set():                  # a notice that reached this process before the child existed
        child.send_signal(signal.SIGTERM)
    held, reason, fatal = [], [], False
    for line in child.stderr:
        if fatal:
            if line.startswith(("RPC:", "***", "    @")):
                break                    # the rest is the abort's stack trace
            reason.append(line)
        elif _FATAL in line:
            fatal = True
            reason.append(line.split("absl::Status:", 1)[-1])
        elif held or _GLOG.match(line) or line.startswith("Traceback (most recent call last)"):
            held.append(line)            # the service's error lines, a traceback: shown unless a peer died
        else:
            sys.stderr.write(line)
            sys.stderr.flush()
    for _ in child.stderr:
        pass
    rc = child.wait()
    if rc == -signal.SIGTERM:            # passed on before the child's handler existed: it had started nothing
        print(f"jaxsink: {message_before_start()}", file=sys.stderr)
        return 0
    if rc != 0 and (fatal or _PEER_LOST.search("".join(held))):
        detail = " ".join("".join(reason or _last_error(held)).split())[:300]
        print(f"jaxsink: error: the distributed job lost a process ({detail}): this process stopped; re-run the "
              "same command on every host to resume from the last complete checkpoint", file=sys.stderr)
        return LOST_PEER_STATUS
    # a run that ended well: the service's shutdown warnings (peers leaving) are noise; keep jaxsink's lines
    sys.stderr.writelines(ln for ln in held if rc != 0 or ln.startswith("jaxsink"))
    return rc if rc >= 0 else 128 - rc


# how a collective, a barrier or the distributed client fails in Python when a peer died (before the
# heartbeat timeout turns it into the abort above)
_PEER_LOST = re.compile(r"gloo|connection reset|connection refused|socket closed|coordination.?service|heartbeat|"
                        r"UNAVAILABLE|DEADLINE_EXCEEDED|barrier|task.*(died|unhealthy|disconnected)", re.I)


def _last_error(lines: list[str]) -> list[str]:
    """The exception line of a traceback (its last line that is not indented), else the last line."""
    plain = [ln for ln in lines if ln.strip() and not ln.startswith((" ", "Traceback"))]
    return plain[-1:] or lines[-1:]
