"""Plain float64 NumPy reference of jaxsink's configurable decoder-only Transformer.

Written from the math spec only (no code shared with, or read from, ``jaxsink.model``): explicit per-sequence,
per-position, per-head loops, chosen for being obviously correct rather than fast. Tests use it to check the
JAX/Flax model variant by variant, and `tests/test_reference_numpy.py` checks it against itself.

API
  forward(params, tokens, cfg, *, return_all=False) -> logits [B, T, V]
      (or (logits, {"residual", "block_out", "attn_probs"}) with return_all)
  loss(params, tokens_in, targets, cfg, loss_start=0, loss_end=None) -> float
  init_params(cfg, rng, max_len) -> params  (random float64 params of the model's layout)

Conventions (0-based block index i): even i = attention block, odd i = FFN block; 2 * n_layers blocks.
``n_kv_heads`` 0 (or None) means n_heads (no GQA).
"""
import math

import numpy as np

PLACEMENTS = ("pre", "post", "sandwich", "sandwich_qk", "none")
NORM_TYPES = ("rmsnorm", "layernorm", "dyt")
FFNS = ("swiglu", "gelu", "linear", "attention")
ATTENTIONS = ("softmax", "sink_logit", "softmax1", "sigmoid", "k_bias", "kv_bias")
GATES = ("none", "cond_channel", "cond_head", "cond_single", "uncond_channel", "uncond_head", "uncond_single",
         "static_position", "static_token")
POSITIONS = ("rope", "nope", "learned", "alibi")


# ----------------------------------------------------------------------------------------------- helpers
def n_kv_heads(cfg):
    return cfg.get("n_kv_heads") or cfg["n_heads"]


def sigmoid(z):
    """Numerically stable logistic: exp(-log(1 + exp(-z))) (no overflow for |z| large)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def silu(z):
    return z * sigmoid(z)


def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


def rms_norm_vec(u, scale, eps):
    """RMSNorm of one vector u [n] with scale [n]."""
    u = np.asarray(u, dtype=np.float64)
    return u / math.sqrt(float(np.mean(u * u)) + eps) * scale


def norm_vec(u, p, norm_type, eps):
    """The model norm N applied to one vector u [D]."""
    if norm_type == "rmsnorm":
        return rms_norm_vec(u, p["scale"], eps)
    if norm_type == "layernorm":
        mu = float(np.mean(u))
        var = float(np.mean((u - mu) ** 2))
        return (u - mu) / math.sqrt(var + eps) * p["scale"] + p["bias"]
    if norm_type == "dyt":
        return p["scale"] * np.tanh(float(p["alpha"]) * u) + p["bias"]
    raise ValueError(f"unknown norm_type {norm_type!r}")


def norm_rows(x, p, norm_type, eps):
    """N applied to every row of x [T, D]."""
    return np.stack([norm_vec(x[t], p, norm_type, eps) for t in range(x.shape[0])])


def rope_vec(u, pos, theta):
    """Rotate-half RoPE of one head vector u [dh] at integer position pos."""
    dh = u.shape[0]
    half = dh // 2
    out = np.empty(dh, dtype=np.float64)
    for j in range(half):
        inv_freq = theta ** (-2.0 * j / dh)
        angle = pos * inv_freq
        c, s = math.cos(angle), math.sin(angle)
        x1, x2 = u[j], u[j + half]
        out[j] = x1 * c - x2 * s
        out[j + half] = x2 * c + x1 * s
    return out


def alibi_slope(h, n_heads):
    return 2.0 ** (-8.0 * (h + 1) / n_heads)


def visible_keys(t, T, window):
    return [s for s in range(T) if s <= t and (window == 0 or s > t - window)]


# ----------------------------------------------------------------------------------------------- attention
def attention(x, p, cfg, tok_emb, *, use_qk_norm):
    """One attention mixer on one sequence.

    x [T, D] mixer input; tok_emb [T, D] = embed[tokens] of this sequence (static_token gate).
    Returns (out [T, D], probs [H, T, T]) where probs covers the real keys only.
    """
    T = x.shape[0]
    D = x.shape[1]
    H, G, dh = cfg["n_heads"], n_kv_heads(cfg), cfg["d_head"]
    assert H % G == 0, (H, G)
    group = H // G
    eps = cfg["norm_eps"]
    kind = cfg["attention"]
    position = cfg["position"]
    window = cfg.get("sliding_window", 0) or 0
    qkv_bias = cfg.get("qkv_bias", False)

    # projections
    q = np.zeros((T, H, dh))
    k = np.zeros((T, G, dh))
    v = np.zeros((T, G, dh))
    for t in range(T):
        for h in range(H):
            q[t, h] = x[t] @ p["wq"][:, h, :] + (p["bq"][h] if qkv_bias else 0.0)
        for g in range(G):
            k[t, g] = x[t] @ p["wk"][:, g, :] + (p["bk"][g] if qkv_bias else 0.0)
            v[t, g] = x[t] @ p["wv"][:, g, :] + (p["bv"][g] if qkv_bias else 0.0)

    # QK-norm (always RMSNorm), before RoPE
    if use_qk_norm:
        scope = cfg.get("qk_norm_scope", "head")
        qs, ks = p["q_norm"]["scale"], p["k_norm"]["scale"]
        for t in range(T):
            if scope == "head":
                for h in range(H):
                    q[t, h] = rms_norm_vec(q[t, h], qs, eps)
                for g in range(G):
                    k[t, g] = rms_norm_vec(k[t, g], ks, eps)
            elif scope == "full":
                q[t] = rms_norm_vec(q[t].reshape(H * dh), qs, eps).reshape(H, dh)
                k[t] = rms_norm_vec(k[t].reshape(G * dh), ks, eps).reshape(G, dh)
            else:
                raise ValueError(f"unknown qk_norm_scope {scope!r}")

    # RoPE on q and k
    if position == "rope":
        theta = cfg["rope_theta"]
        for t in range(T):
            for h in range(H):
                q[t, h] = rope_vec(q[t, h], t, theta)
            for g in range(G):
                k[t, g] = rope_vec(k[t, g], t, theta)

    probs = np.zeros((H, T, T))
    y = np.zeros((T, H, dh))
    inv_sqrt = 1.0 / math.sqrt(dh)
    for h in range(H):
        g = h // group
        for t in range(T):
            keys = visible_keys(t, T, window)
            logits = []
            for s in keys:
                l_ts = float(q[t, h] @ k[s, g]) * inv_sqrt
                if position == "alibi":
                    l_ts -= alibi_slope(h, H) * (t - s)
                logits.append(l_ts)
            logits = np.array(logits)

            extra_logit = None          # logit of the extra (sink) slot, if any
            extra_value = np.zeros(dh)  # its value vector
            if kind == "softmax" or kind == "sigmoid":
                pass
            elif kind == "sink_logit":
                extra_logit = float(p["sink_logit"][h])
            elif kind == "softmax1":
                extra_logit = 0.0
            elif kind in ("k_bias", "kv_bias"):
                extra_logit = float(q[t, h] @ p["k_bias"][g]) * inv_sqrt
                if kind == "kv_bias":
                    extra_value = p["v_bias"][g]
            else:
                raise ValueError(f"unknown attention {kind!r}")

            if kind == "sigmoid":
                w = sigmoid(logits + cfg["sigmoid_bias"])
                w_extra = 0.0
            else:
                m = logits.max() if extra_logit is None else max(logits.max(), extra_logit)
                e = np.exp(logits - m)
                e_extra = 0.0 if extra_logit is None else math.exp(extra_logit - m)
                denom = e.sum() + e_extra
                w = e / denom
                w_extra = e_extra / denom

            for s, w_s in zip(keys, w):
                probs[h, t, s] = w_s
                y[t, h] += w_s * v[s, g]
            y[t, h] += w_extra * extra_value

    # gate on y (per position, head, channel), before the output projection
    gate = cfg.get("gate", "none")
    for t in range(T):
        for h in range(H):
            if gate == "none":
                gv = 1.0
            elif gate == "cond_channel":
                gv = sigmoid(x[t] @ p["gate_w"][:, h, :])            # [dh]
            elif gate == "cond_head":
                gv = sigmoid(x[t] @ p["gate_w"][:, h])               # scalar
            elif gate == "cond_single":
                gv = sigmoid(x[t] @ p["gate_w"][:, 0])
            elif gate == "uncond_channel":
                gv = sigmoid(p["gate_theta"][h])                      # [dh]
            elif gate == "uncond_head":
                gv = sigmoid(p["gate_theta"][h])
            elif gate == "uncond_single":
                gv = sigmoid(p["gate_theta"][0])
            elif gate == "static_position":
                gv = sigmoid(p["gate_table"][t, h])
            elif gate == "static_token":
                gv = sigmoid(tok_emb[t] @ p["gate_w"][:, h])
            else:
                raise ValueError(f"unknown gate {gate!r}")
            y[t, h] = y[t, h] * gv

    out = np.zeros((T, D))
    for t in range(T):
        for h in range(H):
            out[t] += y[t, h] @ p["wo"][h]
    return out, probs


# ----------------------------------------------------------------------------------------------- FFN
def ffn(x, p, cfg, tok_emb, *, use_qk_norm):
    """FFN mixer on one sequence x [T, D]. Returns (out [T, D], probs or None)."""
    kind = cfg["ffn"]
    if kind == "swiglu":
        return (silu(x @ p["w_gate"]) * (x @ p["w_up"])) @ p["w_down"], None
    if kind == "gelu":
        return gelu_tanh(x @ p["w_in"]) @ p["w_out"], None
    if kind == "linear":
        return x @ p["w"], None
    if kind == "attention":
        return attention(x, p, cfg, tok_emb, use_qk_norm=use_qk_norm)
    raise ValueError(f"unknown ffn {kind!r}")


# ----------------------------------------------------------------------------------------------- model
def forward(params, tokens, cfg, *, return_all=False):
    """logits [B, T, V] (float64). With return_all=True: (logits, dict(
         residual=[n_blocks + 1 arrays [B, T, D]]  (0: embedding output; i: after block i - 1),
         block_out=[n_blocks arrays [B, T, D]]    (the F term added to / normed into the residual),
         attn_probs={block index: [B, H, T, T]}))  (every block whose mixer is attention)."""
    tokens = np.asarray(tokens)
    B, T = tokens.shape
    placement = cfg["norm_placement"]
    norm_type, eps = cfg["norm_type"], cfg["norm_eps"]
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown norm_placement {placement!r}")
    use_qk_norm = bool(cfg.get("qk_norm", False)) or placement == "sandwich_qk"
    n_blocks = 2 * cfg["n_layers"]
    embed = np.asarray(params["embed"], dtype=np.float64)
    head = embed.T if cfg.get("tie_embeddings", False) else params["head"]

    all_logits = []
    residual = [[] for _ in range(n_blocks + 1)]
    block_out = [[] for _ in range(n_blocks)]
    attn_probs = {}
    for b in range(B):
        tok_emb = np.stack([embed[int(tokens[b, t])] for t in range(T)])
        h = tok_emb.copy()
        if cfg["position"] == "learned":
            h = h + params["pos_embed"][:T]
        residual[0].append(h)
        for i in range(n_blocks):
            bp = params["blocks"][i]
            x = norm_rows(h, bp["norm_in"], norm_type, eps) if placement in ("pre", "sandwich") else h
            if i % 2 == 0:
                f, probs = attention(x, bp["mixer"], cfg, tok_emb, use_qk_norm=use_qk_norm)
            else:
                f, probs = ffn(x, bp["mixer"], cfg, tok_emb, use_qk_norm=use_qk_norm)
            if probs is not None:
                attn_probs.setdefault(i, []).append(probs)
            if placement in ("sandwich", "sandwich_qk"):
                f = norm_rows(f, bp["norm_out"], norm_type, eps)
            if placement == "post":
                h = norm_rows(h + f, bp["norm_out"], norm_type, eps)
            else:
                h = h + f
            block_out[i].append(f)
            residual[i + 1].append(h)
        hf = h if placement == "none" else norm_rows(h, params["final_norm"], norm_type, eps)
        all_logits.append(hf @ head)

    logits = np.stack(all_logits)
    if not return_all:
        return logits
    return logits, {
        "residual": [np.stack(r) for r in residual],
        "block_out": [np.stack(o) for o in block_out],
        "attn_probs": {i: np.stack(a) for i, a in attn_probs.items()},
    }


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def loss(params, tokens_in, targets, cfg, loss_start=0, loss_end=None):
    """Mean token cross-entropy over positions t in [loss_start, loss_end) of every row."""
    targets = np.asarray(targets)
    logp = log_softmax(forward(params, tokens_in, cfg))
    B, T = targets.shape
    end = T if loss_end is None else loss_end
    nll = [-logp[b, t, int(targets[b, t])] for b in range(B) for t in range(loss_start, end)]
    if not nll:
        raise ValueError(f"empty loss window [{loss_start}, {end})")
    return float(np.mean(nll))


# ----------------------------------------------------------------------------------------------- init
def _norm_params(rng, norm_type, d):
    p = {"scale": 1.0 + 0.1 * rng.standard_normal(d)}
    if norm_type in ("layernorm", "dyt"):
        p["bias"] = 0.05 * rng.standard_normal(d)
    if norm_type == "dyt":
        p["alpha"] = np.asarray(0.5 + 0.05 * rng.standard_normal(), dtype=np.float64)
    return p


def _attention_params(rng, cfg, max_len, w):
    D, H, G, dh = cfg["d_model"], cfg["n_heads"], n_kv_heads(cfg), cfg["d_head"]
    p = {"wq": w(D, H, dh), "wk": w(D, G, dh), "wv": w(D, G, dh), "wo": w(H, dh, D)}
    if cfg.get("qkv_bias", False):
        p["bq"], p["bk"], p["bv"] = (0.05 * rng.standard_normal((n, dh)) for n in (H, G, G))
    if cfg.get("qk_norm", False) or cfg["norm_placement"] == "sandwich_qk":
        full = cfg.get("qk_norm_scope", "head") == "full"
        p["q_norm"] = {"scale": 1.0 + 0.1 * rng.standard_normal(H * dh if full else dh)}
        p["k_norm"] = {"scale": 1.0 + 0.1 * rng.standard_normal(G * dh if full else dh)}
    kind = cfg["attention"]
    if kind == "sink_logit":
        p["sink_logit"] = 0.5 * rng.standard_normal(H)
    if kind in ("k_bias", "kv_bias"):
        p["k_bias"] = w(G, dh)
    if kind == "kv_bias":
        p["v_bias"] = w(G, dh)
    gate = cfg.get("gate", "none")
    if gate == "cond_channel":
        p["gate_w"] = w(D, H, dh)
    elif gate in ("cond_head", "static_token"):
        p["gate_w"] = w(D, H)
    elif gate == "cond_single":
        p["gate_w"] = w(D, 1)
    elif gate == "uncond_channel":
        p["gate_theta"] = 0.5 * rng.standard_normal((H, dh))
    elif gate == "uncond_head":
        p["gate_theta"] = 0.5 * rng.standard_normal(H)
    elif gate == "uncond_single":
        p["gate_theta"] = 0.5 * rng.standard_normal(1)
    elif gate == "static_position":
        p["gate_table"] = 0.5 * rng.standard_normal((max_len, H))
    return p


def init_params(cfg, rng, max_len):
    """Random float64 params of the model layout. rng: np.random.Generator or an int seed."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)

    def w(*shape):
        return 0.3 * rng.standard_normal(shape)

    V, D, F = cfg["vocab_size"], cfg["d_model"], cfg["d_ff"]
    placement, norm_type = cfg["norm_placement"], cfg["norm_type"]
    params = {"embed": w(V, D)}
    if cfg["position"] == "learned":
        params["pos_embed"] = w(max_len, D)
    if not cfg.get("tie_embeddings", False):
        params["head"] = w(D, V)
    if placement != "none":
        params["final_norm"] = _norm_params(rng, norm_type, D)
    blocks = {}
    for i in range(2 * cfg["n_layers"]):
        bp = {}
        if placement in ("pre", "sandwich"):
            bp["norm_in"] = _norm_params(rng, norm_type, D)
        if placement in ("post", "sandwich", "sandwich_qk"):
            bp["norm_out"] = _norm_params(rng, norm_type, D)
        if i % 2 == 0 or cfg["ffn"] == "attention":
            bp["mixer"] = _attention_params(rng, cfg, max_len, w)
        elif cfg["ffn"] == "swiglu":
            bp["mixer"] = {"w_gate": w(D, F), "w_up": w(D, F), "w_down": w(F, D)}
        elif cfg["ffn"] == "gelu":
            bp["mixer"] = {"w_in": w(D, F), "w_out": w(F, D)}
        elif cfg["ffn"] == "linear":
            bp["mixer"] = {"w": w(D, D)}
        else:
            raise ValueError(f"unknown ffn {cfg['ffn']!r}")
        blocks[i] = bp
    params["blocks"] = blocks
    return params


DEFAULT_CFG = dict(
    vocab_size=11, n_layers=1, d_model=8, n_heads=4, n_kv_heads=0, d_head=4, d_ff=12,
    norm_placement="pre", norm_type="rmsnorm", norm_eps=1e-6, qk_norm=False, qk_norm_scope="head",
    ffn="swiglu", attention="softmax", sigmoid_bias=0.0, gate="none", position="rope", rope_theta=10000.0,
    sliding_window=0, tie_embeddings=False, qkv_bias=False,
)


def make_cfg(**overrides):
    """A tiny config (DEFAULT_CFG with overrides) for self-tests."""
    cfg = dict(DEFAULT_CFG)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise KeyError(f"unknown cfg keys {sorted(unknown)}")
    cfg.update(overrides)
    return cfg
