"""One training process per workdir: a second one pointed at the same workdir refuses at once."""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import socket


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir):
    """flock(WORKDIR/.lock): released on exit and by the kernel when the holder dies (no stale locks)."""
    path = pathlib.Path(workdir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise WorkdirLocked(f"workdir {workdir} is in use by {holder}; wait for it or use another --workdir") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)
