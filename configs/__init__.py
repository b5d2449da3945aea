"""Shipped configs (installed as the `jaxsink.configs` package): each file has `get_config()`."""
