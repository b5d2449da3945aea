"""Spike and sink statistics (pure functions), the probe pipeline and its plots."""
