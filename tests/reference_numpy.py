"""Plain float64 NumPy reference of jaxsink's Transformer, written from the math (per-sequence, per-head
loops; no shared code with `jaxsink.model`). Tests compare every variant against it."""
import math

import numpy as np


def _norm(x, p, kind, eps):
    if kind == "rmsnorm":
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * p["scale"]
    if kind == "layernorm":
        c = x - x.mean(axis=-1, keepdims=True)
        return c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps) * p["scale"] + p["bias"]
    return p["scale"] * np.tanh(p["alpha"] * x) + p["bias"]


def _rms(x, scale, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _rope(u, t, theta):
    d = u.shape[-1]
    out = np.empty_like(u)
    for j in range(d // 2):
        angle = t * theta ** (-2.0 * j / d)
        c, s = math.cos(angle), math.sin(angle)
        out[j] = u[j] * c - u[j + d // 2] * s
        out[j + d // 2] = u[j + d // 2] * c + u[j] * s
    return out


def _attention(x, p, cfg, tok_emb, sandwich_qk):
    """x: [T, D] of one sequence. Returns (output [T, D], probs [H, T, T])."""
    T = x.shape[0]
    H, G, dh = cfg["n_heads"], cfg["n_kv_heads"] or cfg["n_heads"], cfg["d_head"]
    group = H // G
    eps = cfg["norm_eps"]
    q = np.einsum("td,dhk->thk", x, p["wq"])
    k = np.einsum("td,dhk->thk", x, p["wk"])
    v = np.einsum("td,dhk->thk", x, p["wv"])
    if cfg["qkv_bias"]:
        q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
    if cfg["qk_norm"] or sandwich_qk:
        if cfg["qk_norm_scope"] == "head":
            q, k = _rms(q, p["q_norm"]["scale"], eps), _rms(k, p["k_norm"]["scale"], eps)
        else:
            q = _rms(q.reshape(T, H * dh), p["q_norm"]["scale"], eps).reshape(T, H, dh)
            k = _rms(k.reshape(T, G * dh), p["k_norm"]["scale"], eps).reshape(T, G, dh)
    if cfg["position"] == "rope":
        q = np.stack([np.stack([_rope(q[t, h], t, cfg["rope_theta"]) for h in range(H)]) for t in range(T)])
        k = np.stack([np.stack([_rope(k[t, g], t, cfg["rope_theta"]) for g in range(G)]) for t in range(T)])
    W = cfg["sliding_window"]
    kind = cfg["attention"]
    probs = np.zeros((H, T, T))
    y = np.zeros((T, H, dh))
    for h in range(H):
        g = h // group
        slope = 2.0 ** (-8.0 * (h + 1) / H)
        for t in range(T):
            keys = [s for s in range(T) if s <= t and (W == 0 or s > t - W)]
            logits = np.array([q[t, h] @ k[s, g] / math.sqrt(dh) for s in keys])
            if cfg["position"] == "alibi":
                logits = logits - slope * np.array([t - s for s in keys], dtype=float)
            extra_value = np.zeros(dh)
            if kind == "sigmoid":
                w = _sigmoid(logits + cfg["sigmoid_bias"])
                p_extra = 0.0
            else:
                extra = None
                if kind == "sink_logit":
                    extra = p["sink_logit"][h]
                elif kind == "softmax1":
                    extra = 0.0
                elif kind in ("k_bias", "kv_bias"):
                    extra = q[t, h] @ p["k_bias"][g] / math.sqrt(dh)
                    if kind == "kv_bias":
                        extra_value = p["v_bias"][g]
                all_logits = logits if extra is None else np.append(logits, extra)
                e = np.exp(all_logits - all_logits.max())
                e = e / e.sum()
                w, p_extra = (e, 0.0) if extra is None else (e[:-1], e[-1])
            for s, ws in zip(keys, w):
                probs[h, t, s] = ws
                y[t, h] += ws * v[s, g]
            y[t, h] += p_extra * extra_value
    y = y * _gate(x, p, cfg, tok_emb, T, H, dh)
    return np.einsum("thk,hkd->td", y, p["wo"]), probs


def _gate(x, p, cfg, tok_emb, T, H, dh):
    gate = cfg["gate"]
    ones = np.ones((T, H, dh))
    if gate == "none":
        return ones
    if gate == "cond_channel":
        return _sigmoid(np.einsum("td,dhk->thk", x, p["gate_w"]))
    if gate in ("cond_head", "cond_single"):
        return ones * _sigmoid(x @ p["gate_w"])[:, :, None]
    if gate == "static_token":
        return ones * _sigmoid(tok_emb @ p["gate_w"])[:, :, None]
    if gate == "static_position":
        return ones * _sigmoid(p["gate_table"][:T])[:, :, None]
    if gate == "uncond_channel":
        return ones * _sigmoid(p["gate_theta"])[None]
    if gate == "uncond_head":
        return ones * _sigmoid(p["gate_theta"])[None, :, None]
    return ones * _sigmoid(p["gate_theta"][0])


def _gelu(z):
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


def _ffn(x, p, cfg, tok_emb):
    kind = cfg["ffn"]
    if kind == "swiglu":
        z = x @ p["w_gate"]
        return (z * _sigmoid(z) * (x @ p["w_up"])) @ p["w_down"], None
    if kind == "gelu":
        return _gelu(x @ p["w_in"]) @ p["w_out"], None
    if kind == "linear":
        return x @ p["w"], None
    return _attention(x, p, cfg, tok_emb, cfg["norm_placement"] == "sandwich_qk")


def forward(params, tokens, cfg, *, return_all=False):
    """logits [B, T, V]; with return_all also residual/block_out lists and attention probabilities."""
    tokens = np.asarray(tokens)
    B, T = tokens.shape
    placement, kind, eps = cfg["norm_placement"], cfg["norm_type"], cfg["norm_eps"]
    n_blocks = 2 * cfg["n_layers"]
    logits = []
    residual = [[] for _ in range(n_blocks + 1)]
    block_out = [[] for _ in range(n_blocks)]
    attn = {}
    for b in range(B):
        tok_emb = params["embed"][tokens[b]]
        h = tok_emb + (params["pos_embed"][:T] if cfg["position"] == "learned" else 0.0)
        residual[0].append(h)
        for i in range(n_blocks):
            bp = params["blocks"][i]
            x = _norm(h, bp["norm_in"], kind, eps) if placement in ("pre", "sandwich") else h
            if i % 2 == 0:
                f, probs = _attention(x, bp["mixer"], cfg, tok_emb, placement == "sandwich_qk")
            else:
                f, probs = _ffn(x, bp["mixer"], cfg, tok_emb)
            if probs is not None:
                attn.setdefault(i, []).append(probs)
            if placement == "post":
                h = _norm(h + f, bp["norm_out"], kind, eps)
            else:
                if placement in ("sandwich", "sandwich_qk"):
                    f = _norm(f, bp["norm_out"], kind, eps)
                h = h + f
            block_out[i].append(f)
            residual[i + 1].append(h)
        hf = h if placement == "none" else _norm(h, params["final_norm"], kind, eps)
        head = params["embed"].T if cfg["tie_embeddings"] else params["head"]
        logits.append(hf @ head)
    logits = np.stack(logits)
    if not return_all:
        return logits
    return logits, {"residual": [np.stack(r) for r in residual], "block_out": [np.stack(o) for o in block_out],
                    "attn_probs": {i: np.stack(a) for i, a in attn.items()}}


def loss(params, tokens_in, targets, cfg, loss_start=0, loss_end=None):
    logits = forward(params, tokens_in, cfg)
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    T = targets.shape[1]
    end = loss_end or T
    nll = [-logp[b, t, targets[b, t]] for b in range(targets.shape[0]) for t in range(loss_start, end)]
    return float(np.mean(nll))
