"""`jaxsink.cpu_scheduler`: the flag is added only when the installed jaxlib defines it, never over the
user's own value, and a process started with it computes (an unknown XLA flag would abort it)."""
import os
import subprocess
import sys

from jaxsink import cpu_scheduler


def test_the_installed_jaxlib_defines_the_flag_and_not_a_made_up_one():
    assert cpu_scheduler.jaxlib_defines(cpu_scheduler.FLAG)
    assert not cpu_scheduler.jaxlib_defines("xla_cpu_" + "flag_no_xla_has_" + "jaxsink_made_up")


def test_added_once_and_never_over_the_users_value(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert cpu_scheduler.prefer_concurrency()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 --{cpu_scheduler.FLAG}=true"
    assert not cpu_scheduler.prefer_concurrency()          # already there
    monkeypatch.setenv("XLA_FLAGS", f"--{cpu_scheduler.FLAG}=false")
    assert not cpu_scheduler.prefer_concurrency()
    assert os.environ["XLA_FLAGS"] == f"--{cpu_scheduler.FLAG}=false"
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(cpu_scheduler, "jaxlib_defines", lambda flag: False)   # a jaxlib without it
    assert not cpu_scheduler.prefer_concurrency()
    assert "XLA_FLAGS" not in os.environ


def test_a_process_with_the_flag_computes():
    program = ("from jaxsink import cpu_setup; print(cpu_setup.prepare()); import os; print(os.environ['XLA_FLAGS']); "
               "import jax, jax.numpy as jnp; print(float(jax.jit(lambda x: (x @ x).sum())(jnp.ones((4, 4)))))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", program], env={**env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert "'concurrency_scheduler': True" in out[0]
    assert out[1] == f"--{cpu_scheduler.FLAG}=true" and out[2] == "64.0"
