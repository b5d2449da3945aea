"""Process settings for JAX on the CPU, applied before JAX starts (standard library only): the step's
temporaries kept resident (`jaxsink.cpu_malloc`) and XLA CPU's concurrency-optimised scheduler
(`jaxsink.cpu_scheduler`). The `jaxsink` command, the test session and the benchmarks' workers call `prepare`."""
from __future__ import annotations

from jaxsink import cpu_malloc, cpu_scheduler


def prepare() -> dict:
    """Apply both; which took effect (each has its opt-out: JAXSINK_MALLOC=default, the flag set in XLA_FLAGS)."""
    return {"resident_temporaries": cpu_malloc.keep_temporaries_resident(),
            "concurrency_scheduler": cpu_scheduler.prefer_concurrency()}
