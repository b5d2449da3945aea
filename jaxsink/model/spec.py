"""`ModelSpec`: the frozen, hashable view of the `model` config section that the model is built from."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    vocab_size: int
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 0
    d_head: int = 32
    d_ff: int = 512
    norm_placement: str = "pre"
    norm_type: str = "rmsnorm"
    norm_eps: float = 1e-6
    qk_norm: bool = False
    qk_norm_scope: str = "head"
    ffn: str = "swiglu"
    attention: str = "softmax"
    sigmoid_bias: float = 0.0
    gate: str = "none"
    position: str = "rope"
    rope_theta: float = 10000.0
    max_seq_len: int = 4096
    sliding_window: int = 0
    tie_embeddings: bool = False
    qkv_bias: bool = False
    dyt_alpha_init: float = 0.5
    init_std: float = 0.02
    embed_init_std: float = 0.0  # 0: init_std
    dtype: str = "float32"
    fused_attention: bool = True
    rope_scaling: tuple = ()     # () or Llama-3 (factor, low_freq_factor, high_freq_factor, original_max_pos)
    remat: str = "none"          # none | full | dots | dots_no_batch (see transformer.REMAT_POLICIES)
    scan_layers: bool = False

    @classmethod
    def from_config(cls, model_cfg, vocab_size: int | None = None) -> "ModelSpec":
        """Build from the `model` ConfigDict; `vocab_size` fills in `model.vocab_size == 0`."""
        values = {f.name: model_cfg[f.name] for f in dataclasses.fields(cls)}
        if not values["vocab_size"]:
            if vocab_size is None:
                raise ValueError("model.vocab_size is 0 and no tokenizer vocabulary size was given")
            values["vocab_size"] = -(-vocab_size // 8) * 8
        return cls(**values)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def n_blocks(self) -> int:
        """The paper counts 2L blocks: odd (1-based) = attention, even = FFN (§2.1)."""
        return 2 * self.n_layers

    @property
    def uses_qk_norm(self) -> bool:
        return self.qk_norm or self.norm_placement == "sandwich_qk"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)
