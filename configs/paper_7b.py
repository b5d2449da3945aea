"""The paper's baseline (arXiv 2603.05498, App. A, Table 9): a Llama-2-7B-shaped pre-norm model.

32 layers, d_model 4096, 32 heads x 128, SwiGLU 11008, vocab 32000, AdamW (0.9, 0.95), wd 0.1, clip 1.0,
LR 3e-4 with 2,000 warmup steps and cosine decay to 0.1 x LR, 2M-token batches (512 x 4096), context 4096.
Steps: 100B tokens / 2M = 50,000 (the paper prints 5,000 steps, inconsistent with its 100B tokens; we
follow the token count). Meant for a TPU pod slice: FSDP over every chip (mesh.fsdp=-1).
"""
from jaxsink.config import base_config


def get_config():
    c = base_config()
    c.model.n_layers = 32
    c.model.d_model = 4096
    c.model.n_heads = 32
    c.model.d_head = 128
    c.model.d_ff = 11008
    c.model.vocab_size = 32000
    c.model.max_seq_len = 4096
    c.model.dtype = "bfloat16"
    c.data.tokenizer = "bpe"
    c.data.bpe_vocab_size = 32000
    c.data.corpus = "english"
    c.train.steps = 50000
    c.train.batch_size = 512
    c.train.seq_len = 4096
    c.train.lr = 3e-4
    c.train.min_lr_ratio = 0.1
    c.train.warmup_steps = 2000
    c.train.weight_decay = 0.1
    c.train.b1 = 0.9
    c.train.b2 = 0.95
    c.train.grad_clip = 1.0
    c.train.log_every = 10
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    # fits a v5p-256 / v4 slice (BENCHMARKS.md, `jaxsink compile --config paper_7b --topology v5p-256`):
    # parameters and optimizer state sharded over every chip (FSDP), layers scanned, per-layer remat
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.model.scan_layers = True
    c.model.remat = "full"
    return c
