"""Tiny sweep base: the CPU recipe (docs/tiny_recipe.md) under which sinks and spikes appear in minutes.

Used by `jaxsink sweep --scale tiny` and `jaxsink demo`.
"""
from jaxsink.config import base_config


def get_config():
    c = base_config()
    c.model.n_layers = 2
    c.model.d_model = 128
    c.model.n_heads = 4
    c.model.d_head = 32
    c.model.d_ff = 512
    c.model.max_seq_len = 1024
    c.train.steps = 1000
    c.train.batch_size = 16
    c.train.seq_len = 128
    c.train.lr = 3e-3
    c.train.warmup_steps = 100
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.eval_sequences = 256
    c.data.corpus = "shakespeare"
    return c
