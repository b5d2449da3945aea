"""About 1.2B parameters (Llama-3.2-1B shapes, BPE 32000 instead of 128k), for one accelerator: the ~1B
row of the MFU benchmark (`benchmarks/gpu_mfu.sh`). 16 layers x d_model 2048, 32 query heads x 64 with 8
key/value heads, SwiGLU 8192, bf16, layers scanned with per-layer rematerialisation of all but the matmuls.
"""
from jaxsink.configs import small


def get_config():
    c = small.get_config()
    c.model.n_layers = 16
    c.model.d_model = 2048
    c.model.n_heads = 32
    c.model.n_kv_heads = 8
    c.model.d_ff = 8192
    c.model.scan_layers = True
    c.model.remat = "dots_no_batch"
    c.train.batch_size = 16
    c.train.seq_len = 2048
    c.train.lr = 3e-4
    return c
