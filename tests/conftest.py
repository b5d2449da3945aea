"""Test session setup: 8 simulated CPU devices (before JAX initialises its backend), no network, and XLA
CPU's temporaries kept resident as the `jaxsink` command keeps them (`jaxsink.cpu_malloc`)."""
import os

from jaxsink import cpu_malloc

cpu_malloc.keep_temporaries_resident()

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
