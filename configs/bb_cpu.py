"""Guo et al.'s Bigram-Backcopy setting (`bb_guo`) reduced for 2 CPU cores: the base of `--scale bb` sweeps
(`experiments/bb_*.py`) and of the CPU emergence test. Width 64, one head of 64, ReLU FFN 256, sequences of
64, batch 16, lr 3e-3 (10x theirs; at 3e-4 a run this small needs thousands of steps), linear maps at
torch's default scale for width 64 (std 1/sqrt(3 * 64) = 0.072), 400 steps (0.4M tokens). The BOS sink
(non-trigger queries' attention on BOS above 0.5) forms by about step 300 (docs/tiny_recipe.md).
"""
from jaxsink.configs import bb_guo


def get_config():
    c = bb_guo.get_config()
    c.model.d_model = 64
    c.model.d_head = 64
    c.model.d_ff = 256
    c.model.max_seq_len = 64
    c.model.init_std = 0.072
    c.train.seq_len = 64
    c.train.batch_size = 16
    c.train.lr = 3e-3
    c.train.steps = 400
    c.train.log_every = 100
    c.train.checkpoint_every = 400
    c.train.keep_checkpoints = 1
    c.train.eval_sequences = 64
    c.stats.every = 100
    return c
