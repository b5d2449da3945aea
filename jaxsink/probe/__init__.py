"""Spike and sink statistics (pure functions, re-exported from `stats`), the probe pipeline and its plots."""
from jaxsink.probe.stats import *  # noqa: F401,F403
from jaxsink.probe.stats import __all__  # noqa: F401
