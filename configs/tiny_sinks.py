"""Tiny sweep base (`jaxsink sweep --scale tiny`, `jaxsink demo`): the best CPU recipe of docs/tiny_recipe.md.

2 layers, d_model 128, 8 heads x 32, SwiGLU, RoPE, BOS at position 0, byte-level Shakespeare; LR 3e-3 without
decay (min_lr_ratio 1.0), wd 0.1; 1500 steps x 16 x 128 = 3.1M tokens, about 4 minutes per variant on 2 idle
cores. At this budget pre-norm grows a position-0 activation after the first FFN block (about 40x the
median) but almost no sink heads: see docs/tiny_recipe.md for what was tried and what scale sinks need.
"""
from jaxsink.configs import tiny


def get_config():
    c = tiny.get_config()
    c.model.n_heads = 8
    c.train.steps = 1500
    c.train.min_lr_ratio = 1.0
    c.train.eval_sequences = 128
    return c
