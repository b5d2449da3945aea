"""Ask XLA CPU for its concurrency-optimised scheduler (standard library only, so it runs before JAX).

Why (issue 18, BENCHMARKS.md "the concurrency-optimised scheduler"): XLA CPU's default scheduler orders the
ops to minimise memory; the concurrency-optimised one orders them so that independent ops can overlap on the
executor's threads. Measured interleaved on the idle 2-core machine (`benchmarks/torch_reference.py
--xla-flags xla_cpu_enable_concurrency_optimized_scheduler=false`): the tiny float32 step is 1.03-1.09x faster
with it in 5 of 6 runs (0.92x in the other); the compiled program's temporaries are the same size (93.3 MB).

An XLA flag that the installed jaxlib does not define aborts the process at backend start, and jax is not
pinned from above; so the flag is added only when the jaxlib binary carries its name (28 ms to look), and
never over a value the user set in `XLA_FLAGS`. `jaxsink.entry` applies it only where JAX runs on the CPU.
"""
from __future__ import annotations

import importlib.util
import mmap
import os
import pathlib

FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


def jaxlib_defines(flag: str) -> bool:
    """Whether a shared library of the installed jaxlib contains the flag's name (looked up without importing
    jaxlib, largest library first; False when jaxlib is not installed)."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    libraries = [p for d in spec.submodule_search_locations for p in pathlib.Path(d).glob("*.so")]
    for lib in sorted(libraries, key=lambda p: -p.stat().st_size):
        with open(lib, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(flag.encode()) >= 0:
                    return True
    return False


def prefer_concurrency() -> bool:
    """Add `--FLAG=true` to XLA_FLAGS; False (nothing changed) when XLA_FLAGS already names the flag or the
    installed jaxlib does not define it. Call before JAX's CPU backend starts."""
    current = os.environ.get("XLA_FLAGS", "")
    if FLAG in current or not jaxlib_defines(FLAG):
        return False
    os.environ["XLA_FLAGS"] = f"{current} --{FLAG}=true".strip()
    return True
