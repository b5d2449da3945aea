"""`jaxsink.cpu_malloc`: a 100 MB buffer allocated, touched and freed over and over from a worker thread (as
XLA CPU allocates a step's temporaries) page-faults in once, not at every allocation; glibc's defaults fault
every time. Each case runs in a fresh interpreter, since the settings must precede the process's threads."""
import os
import platform
import subprocess
import sys

import pytest

from jaxsink import entry

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

PROGRAM = r"""
import resource, sys, threading
from jaxsink import cpu_malloc
applied = cpu_malloc.keep_temporaries_resident()
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def work():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        buf = libc.malloc(100 * 2 ** 20)     # as XLA's AlignedMalloc: plain malloc, no huge-page advice
        ctypes.memset(buf, 1, 100 * 2 ** 20)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
        libc.free(buf)
t = threading.Thread(target=work); t.start(); t.join()
print(applied, *faults)
"""
PAGES = 100 * 2 ** 20 // 4096       # 25,600


def faults_per_allocation(env_extra: dict) -> tuple[bool, list[int]]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    applied, *faults = out.stdout.split()
    return applied == "True", [int(f) for f in faults]


def test_a_freed_buffer_is_reused_without_page_faults():
    applied, faults = faults_per_allocation({})
    assert applied
    assert faults[0] >= PAGES * 0.9                  # the first allocation faults its pages in
    assert max(faults[1:]) < PAGES * 0.05, faults   # the later ones reuse them


def test_glibc_defaults_fault_every_allocation_in_again():
    """The control: opted out, every 100 MB allocation is a fresh mmap (what the tiny training step paid)."""
    applied, faults = faults_per_allocation({"JAXSINK_MALLOC": "default"})
    assert not applied
    assert min(faults) >= PAGES * 0.9, faults


def test_the_command_applies_it_only_where_jax_runs_on_the_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert entry.runs_on_cpu()
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert not entry.runs_on_cpu()
    monkeypatch.setenv("JAX_PLATFORMS", "")          # empty: JAX picks the platform, as when unset
    monkeypatch.setattr(entry, "accelerator_present", lambda: False)
    assert entry.runs_on_cpu()
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(entry, "accelerator_present", lambda: True)
    assert not entry.runs_on_cpu()
    monkeypatch.setattr(entry, "accelerator_present", lambda: False)
    assert entry.runs_on_cpu()
