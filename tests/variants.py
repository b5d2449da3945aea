"""Every architectural option of the model, one factor at a time (plus a few combinations)."""
import dataclasses

from jaxsink.model import ModelSpec

BASE = dict(vocab_size=40, n_layers=2, d_model=16, n_heads=4, n_kv_heads=0, d_head=6, d_ff=24,
            max_seq_len=16, norm_eps=1e-5)

VARIANTS = {
    "baseline": {},
    "post": dict(norm_placement="post"),
    "sandwich": dict(norm_placement="sandwich"),
    "sandwich_qk": dict(norm_placement="sandwich_qk"),
    "no_norm": dict(norm_placement="none"),
    "layernorm": dict(norm_type="layernorm"),
    "dyt": dict(norm_type="dyt"),
    "dyt_sandwich": dict(norm_type="dyt", norm_placement="sandwich"),
    "qk_norm": dict(qk_norm=True),
    "qk_norm_full_post": dict(qk_norm=True, qk_norm_scope="full", norm_placement="post"),
    "gelu": dict(ffn="gelu"),
    "linear_ffn": dict(ffn="linear"),
    "attention_only": dict(ffn="attention"),
    "sink_logit": dict(attention="sink_logit"),
    "softmax1": dict(attention="softmax1"),
    "sigmoid": dict(attention="sigmoid", sigmoid_bias=-1.0),
    "k_bias": dict(attention="k_bias"),
    "kv_bias": dict(attention="kv_bias"),
    **{f"gate_{g}": dict(gate=g) for g in ("cond_channel", "cond_head", "cond_single", "uncond_channel",
                                            "uncond_head", "uncond_single", "static_position", "static_token")},
    "nope": dict(position="nope"),
    "learned_pos": dict(position="learned"),
    "alibi": dict(position="alibi"),
    "gqa": dict(n_kv_heads=2),
    "mqa_kv_bias_gate": dict(n_kv_heads=1, attention="kv_bias", gate="cond_channel"),
    "wide_heads": dict(n_heads=2, d_head=12),
    "sliding_window": dict(sliding_window=3),
    "tied": dict(tie_embeddings=True),
    "qkv_bias": dict(qkv_bias=True, n_kv_heads=2),
    "olmo2_like": dict(norm_placement="sandwich_qk", qk_norm_scope="full", n_kv_heads=2),
}


def spec(name: str, **extra) -> ModelSpec:
    return ModelSpec(**{**BASE, **VARIANTS[name], **extra})


def flat(spec_: ModelSpec) -> dict:
    return dataclasses.asdict(spec_)
