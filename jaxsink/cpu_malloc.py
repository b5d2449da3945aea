"""Keep XLA CPU's per-step temporaries resident (glibc only; standard library only, so it runs before JAX).

Why (issue 18, BENCHMARKS.md "Fresh temporary buffers every step"): the PjRt CPU client allocates a
compiled program's temporaries (104.6 MB for the tiny training step) with `posix_memalign` at every
execution, from one of its worker threads, and frees them after it. glibc serves a request that large from
a fresh `mmap` (a thread arena cannot hold it: its heaps are at most 64 MB, and it falls back to `mmap`
even when `M_MMAP_MAX` is 0), and gives it back with `munmap` on free, so every step page-faults all
26,066 pages in again: measured 50-70 ms of system time in a 275 ms step (`strace -k` shows the call
chain `CpuDeviceMemory::AllocateInto` -> `AlignedMalloc` -> `mmap`).

`keep_temporaries_resident()` sets three `mallopt` parameters, which must happen before JAX starts its
thread pool (threads keep the arena they first used):
- `M_ARENA_MAX = 1`: every thread allocates from the main arena, which grows with `brk` to any size;
- `M_MMAP_MAX = 0`: no allocation is served by `mmap`;
- `M_TRIM_THRESHOLD = 2^31 - 1`: freed memory at the top of the heap is not returned to the system.
The freed temporaries are then reused by the next step, with no page faults (measured: 26,066 minor faults
per step -> 0, system time 50 -> 1 ms). The price: the process's resident memory does not shrink after a
peak. `JAXSINK_MALLOC=default` leaves glibc's defaults; `jaxsink` applies it only where JAX will run on
the CPU (`jaxsink.entry`).
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8      # glibc's malloc.h
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1))
OPT_OUT = "JAXSINK_MALLOC"


def keep_temporaries_resident() -> bool:
    """Apply `SETTINGS` with glibc's `mallopt`; False (nothing changed) off glibc or when opted out."""
    if os.environ.get(OPT_OUT, "").lower() == "default" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in SETTINGS)
