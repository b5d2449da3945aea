"""Guo et al. 2024's Bigram-Backcopy setting ("Active-dormant attention heads", arXiv 2410.13835; code
GuoTianYu2000/Active-Dormant-Attention, `BBM/scripts/dynamics.sh`): the testbed in which one attention
head turns its first token into a full sink within a few hundred steps.

Data `bb_guo` (`jaxsink.data.bb_guo`): independent sequences from BOS over TinyShakespeare's 65
characters, 3 triggers (space, e, t), bigram matrix from the shipped Shakespeare plays. Model: 1 layer
(`bb_guo_3l`: 3), 1 head of 256, width 256, ReLU FFN 1024, learned absolute positions, pre-norm
LayerNorm, untied head, no biases; embeddings N(0, 1) and linear maps at torch's default scale
(std 1/sqrt(3 fan_in) = 0.036). AdamW lr 3e-4 constant (no warm-up, no decay, no clipping), weight
decay 1e-4 on every parameter, betas (0.9, 0.99); sequence length 256; batch 512 x 10k steps as theirs
(override `train.batch_size` / `train.steps` for CPU: docs/tiny_recipe.md measures batch 16, 64, 512).
"""
from jaxsink.config import base_config


def get_config():
    c = base_config()
    c.model.n_layers = 1
    c.model.d_model = 256
    c.model.n_heads = 1
    c.model.d_head = 256
    c.model.d_ff = 1024
    c.model.ffn = "relu"
    c.model.position = "learned"
    c.model.max_seq_len = 256
    c.model.norm_type = "layernorm"
    c.model.norm_eps = 1e-5
    c.model.init_std = 0.036
    c.model.embed_init_std = 1.0
    c.data.corpus = "bb_guo"
    c.train.steps = 10000
    c.train.batch_size = 512
    c.train.seq_len = 256
    c.train.lr = 3e-4
    c.train.min_lr_ratio = 1.0
    c.train.warmup_steps = 0
    c.train.weight_decay = 1e-4
    c.train.b1 = 0.9
    c.train.b2 = 0.99
    c.train.grad_clip = 0.0
    c.train.decay_norms = True
    c.train.decay_embeddings = True
    c.train.decay_biases = True
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.eval_sequences = 256
    c.train.checkpoint_every = 500
    c.stats.every = 20
    return c
