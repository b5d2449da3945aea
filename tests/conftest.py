"""Test session setup: 8 simulated CPU devices (before JAX initialises its backend), no network, and JAX's
CPU process settings as the `jaxsink` command applies them (`jaxsink.cpu_setup`)."""
import os

from jaxsink import cpu_setup

cpu_setup.prepare()

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
