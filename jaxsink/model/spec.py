"""`ModelSpec`: the one model schema. Its fields, defaults and allowed values are the config's `model`
section (`config.base_config` builds that section from them) and `validate_model` is the one validation of
both: a config before any compute, and every `ModelSpec` when it is made (training, importers, sweeps).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NORM_PLACEMENTS = ("pre", "post", "sandwich", "sandwich_qk", "none")
NORM_TYPES = ("rmsnorm", "layernorm", "dyt")
QK_NORM_SCOPES = ("head", "full")
FFNS = ("swiglu", "gelu", "linear", "attention", "relu")
ATTENTIONS = ("softmax", "sink_logit", "softmax1", "sigmoid", "k_bias", "kv_bias", "relu")
GATES = ("none", "cond_channel", "cond_head", "cond_single", "uncond_channel", "uncond_head",
         "uncond_single", "static_position", "static_token")
POSITIONS = ("rope", "nope", "learned", "alibi")
DTYPES = ("float32", "bfloat16")
# `remat`: what the backward pass may keep from each layer's forward (the rest is recomputed)
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.checkpoint_dots,
                  "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims}
CHOICES = {"norm_placement": NORM_PLACEMENTS, "norm_type": NORM_TYPES, "qk_norm_scope": QK_NORM_SCOPES,
           "ffn": FFNS, "attention": ATTENTIONS, "gate": GATES, "position": POSITIONS, "dtype": DTYPES,
           "remat": tuple(REMAT_POLICIES)}


class ConfigError(ValueError):
    """A bad configuration; the message is one line that names the offending key."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    vocab_size: int              # in a config, 0: taken from the tokenizer (rounded up to a multiple of 8)
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 0          # 0: = n_heads (no GQA)
    d_head: int = 32             # independent of d_model
    d_ff: int = 512
    norm_placement: str = "pre"
    norm_type: str = "rmsnorm"
    norm_eps: float = 1e-6
    qk_norm: bool = False
    qk_norm_scope: str = "head"  # head: per-head q/k RMSNorm; full: over all heads (OLMo-2)
    ffn: str = "swiglu"
    attention: str = "softmax"
    sigmoid_bias: float = 0.0
    gate: str = "none"
    position: str = "rope"
    rope_theta: float = 10000.0
    max_seq_len: int = 4096
    sliding_window: int = 0      # 0: full causal attention
    tie_embeddings: bool = False
    qkv_bias: bool = False
    dyt_alpha_init: float = 0.5
    init_std: float = 0.02
    embed_init_std: float = 0.0  # 0: init_std
    dtype: str = "float32"
    fused_attention: bool = True  # jax.nn.dot_product_attention when probabilities are not captured
    rope_scaling: tuple = ()     # () or Llama-3 (factor, low_freq_factor, high_freq_factor, original_max_pos)
    remat: str = "none"          # rematerialise each layer in the backward pass (REMAT_POLICIES)
    scan_layers: bool = False    # store layers stacked and lax.scan over them (model/layout.py): flat in depth

    def __post_init__(self):
        validate_model(self, vocab_known=True)

    @classmethod
    def from_config(cls, model_cfg, vocab_size: int | None = None) -> "ModelSpec":
        """Build from the `model` ConfigDict; `vocab_size` fills in `model.vocab_size == 0`."""
        values = {f.name: model_cfg[f.name] for f in dataclasses.fields(cls)}
        if not values["vocab_size"]:
            if vocab_size is None:
                raise ConfigError("model.vocab_size is 0 and no tokenizer vocabulary size was given")
            values["vocab_size"] = -(-vocab_size // 8) * 8
        return cls(**{**values, "rope_scaling": tuple(values["rope_scaling"])})

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def n_blocks(self) -> int:
        """The paper counts 2L blocks: odd (1-based) = attention, even = FFN (§2.1)."""
        return 2 * self.n_layers

    def is_attention_block(self, index: int) -> bool:
        """Paper block `index` (1-based) mixes with attention: every odd block, every block if ffn=attention."""
        return index % 2 == 1 or self.ffn == "attention"

    @property
    def attention_blocks(self) -> list[int]:
        return [i for i in range(1, self.n_blocks + 1) if self.is_attention_block(i)]

    @property
    def uses_qk_norm(self) -> bool:
        return self.qk_norm or self.norm_placement == "sandwich_qk"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


def config_defaults() -> dict:
    """The config's `model` section: every ModelSpec field with its default (vocab_size 0: the tokenizer's)."""
    return {f.name: 0 if f.name == "vocab_size" else f.default for f in dataclasses.fields(ModelSpec)}


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"model.{key}: {message}")


def validate_model(m, vocab_known: bool = False) -> None:
    """Every value and combination of a model (a config's `model` section or a ModelSpec): ConfigError
    naming the key. `vocab_known`: vocab_size must be set (a ModelSpec), not 0 (= from the tokenizer)."""
    get = m.__getitem__ if hasattr(m, "__getitem__") else lambda k: getattr(m, k)
    for key in ("n_layers", "d_model", "n_heads", "d_head", "d_ff", "max_seq_len"):
        _check(get(key) > 0, key, f"must be positive, got {get(key)}")
    if vocab_known:
        _check(get("vocab_size") > 0, "vocab_size", f"must be positive, got {get('vocab_size')}")
    _check(get("vocab_size") >= 0, "vocab_size", "must be >= 0 (0 = from the tokenizer)")
    _check(get("n_kv_heads") >= 0, "n_kv_heads", "must be >= 0 (0 = n_heads)")
    n_kv = get("n_kv_heads") or get("n_heads")
    _check(get("n_heads") % n_kv == 0, "n_kv_heads", f"n_heads={get('n_heads')} is not a multiple of n_kv_heads={n_kv}")
    for key, options in CHOICES.items():
        _check(get(key) in options, key, f"{get(key)!r} is not one of {list(options)}")
    if get("position") == "rope":
        _check(get("d_head") % 2 == 0, "d_head", f"must be even with RoPE, got {get('d_head')}")
        _check(get("rope_theta") > 0, "rope_theta", "must be positive")
    _check(len(get("rope_scaling")) in (0, 4), "rope_scaling", "must be () or 4 numbers (Llama-3 scaling)")
    _check(get("sliding_window") >= 0, "sliding_window", "must be >= 0 (0 = full causal attention)")
    _check(get("norm_eps") > 0, "norm_eps", "must be positive")
    _check(get("init_std") > 0, "init_std", "must be positive")
    _check(get("embed_init_std") >= 0, "embed_init_std", "must be >= 0 (0 = init_std)")
    if get("norm_placement") == "none":
        _check(not get("qk_norm"), "qk_norm", "norm_placement=none means no normalisation at all")
