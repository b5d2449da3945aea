"""Small: about 125M parameters (GPT-2 small shape, Llama-style parts), for one GPU.

12 layers x d_model 768, 12 heads x 64, SwiGLU 2048, BPE vocabulary 32000 trained on the corpus.
"""
from jaxsink.config import base_config


def get_config():
    c = base_config()
    c.model.n_layers = 12
    c.model.d_model = 768
    c.model.n_heads = 12
    c.model.d_head = 64
    c.model.d_ff = 2048
    c.model.max_seq_len = 2048
    c.model.dtype = "bfloat16"
    c.data.tokenizer = "bpe"
    c.data.bpe_vocab_size = 32000
    c.data.corpus = "english"
    c.train.steps = 20000
    c.train.batch_size = 64
    c.train.seq_len = 1024
    c.train.lr = 6e-4
    c.train.warmup_steps = 1000
    c.train.log_every = 20
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    return c
