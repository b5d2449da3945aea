"""Guo et al.'s 3-layer Bigram-Backcopy model (`BBM/scripts/dynamics.sh`, n_layers 3): `bb_guo` otherwise."""
from jaxsink.configs import bb_guo


def get_config():
    c = bb_guo.get_config()
    c.model.n_layers = 3
    return c
