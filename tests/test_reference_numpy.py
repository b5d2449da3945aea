"""Self-consistency checks of the float64 NumPy reference (`tests/reference_numpy.py`).

The reference is what the JAX/Flax model is checked against, so it is itself checked here against properties
that follow from the math alone: normalisation of each attention kind, causality, sliding windows, RoPE's
relative-position property, norm bounds, GQA == explicitly repeated KV heads, exact closed forms with zeroed
weights, and identities between variants. Everything is tiny (T <= 7, D = 8) and runs in a few seconds.
"""
import copy
import math

import numpy as np
import pytest

import reference_numpy as ref

T = 6
TOL = 1e-12


def setup(seed=0, B=2, T_=T, max_len=8, **over):
    cfg = ref.make_cfg(**over)
    params = ref.init_params(cfg, seed, max_len)
    tokens = np.random.default_rng(seed + 100).integers(0, cfg["vocab_size"], (B, T_))
    return cfg, params, tokens


def run(cfg, params, tokens):
    return ref.forward(params, tokens, cfg, return_all=True)


def attention_mixers(params):
    for bp in params["blocks"].values():
        if "wq" in bp["mixer"]:
            yield bp["mixer"]


def zero_qk(params):
    """Zero the query/key paths so every real attention logit is 0 (before ALiBi)."""
    params = copy.deepcopy(params)
    for m in attention_mixers(params):
        m["wq"][:] = 0.0
        m["wk"][:] = 0.0
        for name in ("bq", "bk"):
            if name in m:
                m[name][:] = 0.0
    return params


def causal_mask(T_, window=0):
    return np.array([[s <= t and (window == 0 or s > t - window) for s in range(T_)] for t in range(T_)])


# ----------------------------------------------------------------------------------------------- normalisers
@pytest.mark.parametrize("position", ["rope", "alibi", "learned"])
@pytest.mark.parametrize("window", [0, 2])
def test_softmax_rows_sum_to_one(position, window):
    cfg, params, tokens = setup(position=position, sliding_window=window, ffn="attention", n_layers=2)
    _, extra = run(cfg, params, tokens)
    assert sorted(extra["attn_probs"]) == [0, 1, 2, 3]  # every mixer is attention here
    for probs in extra["attn_probs"].values():
        assert probs.shape == (2, cfg["n_heads"], T, T)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=TOL)
        assert np.all(probs[..., ~causal_mask(T, window)] == 0.0)
        assert np.all(probs[..., causal_mask(T, window)] > 0.0)


@pytest.mark.parametrize("kind", ["sink_logit", "softmax1", "k_bias", "kv_bias"])
def test_extra_slot_rows_sum_below_one(kind):
    cfg, params, tokens = setup(attention=kind, ffn="attention")
    _, extra = run(cfg, params, tokens)
    for probs in extra["attn_probs"].values():
        sums = probs.sum(-1)
        assert np.all(sums < 1.0 - 1e-9), sums.max()
        assert np.all(sums > 0.0)
        assert np.all(probs[..., ~causal_mask(T)] == 0.0)


@pytest.mark.parametrize("kind", ["softmax", "softmax1", "sink_logit", "k_bias", "kv_bias"])
def test_zero_logit_closed_form(kind):
    """With q = k = 0 (no positional logit term) every real logit is 0: p = 1 / (n_visible + exp(extra))."""
    cfg, params, tokens = setup(attention=kind, position="nope")
    params = zero_qk(params)
    _, extra = run(cfg, params, tokens)
    probs = extra["attn_probs"][0]
    H = cfg["n_heads"]
    for h in range(H):
        if kind == "softmax":
            extra_mass = 0.0
        elif kind == "sink_logit":
            extra_mass = math.exp(params["blocks"][0]["mixer"]["sink_logit"][h])
        else:  # softmax1; k_bias / kv_bias with q = 0 have an extra logit of exactly 0
            extra_mass = 1.0
        for t in range(T):
            want = np.where(np.arange(T) <= t, 1.0 / (t + 1 + extra_mass), 0.0)
            np.testing.assert_allclose(probs[:, h, t], np.broadcast_to(want, (2, T)), atol=TOL)


def test_sigmoid_closed_form_and_huge_negative_bias():
    cfg, params, tokens = setup(attention="sigmoid", position="nope", sigmoid_bias=0.0)
    _, extra = run(cfg, zero_qk(params), tokens)
    mask = causal_mask(T)
    probs = extra["attn_probs"][0]
    assert np.all(probs[..., mask] == 0.5) and np.all(probs[..., ~mask] == 0.0)

    cfg, params, tokens = setup(attention="sigmoid", sigmoid_bias=-1e4, ffn="attention")
    _, extra = run(cfg, params, tokens)
    for i in (0, 1):
        assert np.abs(extra["attn_probs"][i]).max() < 1e-300
        assert np.abs(extra["block_out"][i]).max() < 1e-300
    np.testing.assert_allclose(extra["residual"][2], extra["residual"][0], atol=TOL)

    # no normalisation: a positive bias makes rows sum well above 1 for later queries
    cfg, params, tokens = setup(attention="sigmoid", sigmoid_bias=20.0)
    _, extra = run(cfg, params, tokens)
    sums = extra["attn_probs"][0].sum(-1)  # [B, H, T]
    np.testing.assert_allclose(sums, np.broadcast_to(np.arange(1.0, T + 1), sums.shape), atol=1e-6)


def test_kv_bias_value_slot():
    """kv_bias with v_bias = 0 equals k_bias; with v_bias != 0 it differs exactly by p_extra * v_bias @ wo."""
    cfg_k, params, tokens = setup(attention="kv_bias", position="nope", n_layers=1)
    p0 = copy.deepcopy(params)
    p0["blocks"][0]["mixer"]["v_bias"][:] = 0.0
    p_k = copy.deepcopy(p0)
    del p_k["blocks"][0]["mixer"]["v_bias"]
    out_kv0 = run(cfg_k, p0, tokens)[1]["block_out"][0]
    out_k = run(ref.make_cfg(attention="k_bias", position="nope"), p_k, tokens)[1]["block_out"][0]
    np.testing.assert_allclose(out_kv0, out_k, atol=TOL)

    # with q = k = 0 the extra slot has mass 1 / (t + 2): check the value contribution exactly (pre, rmsnorm)
    pz = zero_qk(params)
    m = pz["blocks"][0]["mixer"]
    full = run(cfg_k, pz, tokens)[1]["block_out"][0]
    pz0 = copy.deepcopy(pz)
    pz0["blocks"][0]["mixer"]["v_bias"][:] = 0.0
    base = run(cfg_k, pz0, tokens)[1]["block_out"][0]
    H, G = cfg_k["n_heads"], ref.n_kv_heads(cfg_k)
    for t in range(T):
        want = sum(m["v_bias"][h // (H // G)] @ m["wo"][h] for h in range(H)) / (t + 2)
        np.testing.assert_allclose(full[:, t] - base[:, t], np.broadcast_to(want, (2, cfg_k["d_model"])), atol=TOL)


@pytest.mark.parametrize("kind,value", [("sink_logit", "sink_logit"), ("k_bias", "k_bias")])
def test_zero_extra_logit_equals_softmax1(kind, value):
    cfg, params, tokens = setup(attention=kind)
    for m in attention_mixers(params):
        m[value][:] = 0.0
    logits = ref.forward(params, tokens, cfg)
    np.testing.assert_allclose(logits, ref.forward(params, tokens, ref.make_cfg(attention="softmax1")), atol=TOL)
    assert not np.allclose(logits, ref.forward(params, tokens, ref.make_cfg(attention="softmax")), atol=1e-6)


# ----------------------------------------------------------------------------------------------- causality
@pytest.mark.parametrize("position", ref.POSITIONS)
@pytest.mark.parametrize("kind", ref.ATTENTIONS)
def test_causality(kind, position):
    gate = {"softmax": "static_token", "sigmoid": "static_position", "k_bias": "cond_channel"}.get(kind, "none")
    cfg, params, tokens = setup(attention=kind, position=position, gate=gate, ffn="attention", sigmoid_bias=-1.0,
                                n_layers=2, B=1)
    changed = tokens.copy()
    changed[0, -1] = (changed[0, -1] + 1) % cfg["vocab_size"]
    a, b = ref.forward(params, tokens, cfg), ref.forward(params, changed, cfg)
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], atol=TOL)
    assert np.abs(a[:, -1] - b[:, -1]).max() > 1e-6  # the change is visible where it should be
    # and a change at position 2 reaches every later position
    changed = tokens.copy()
    changed[0, 2] = (changed[0, 2] + 1) % cfg["vocab_size"]
    c = ref.forward(params, changed, cfg)
    np.testing.assert_allclose(a[:, :2], c[:, :2], atol=TOL)
    assert np.all(np.abs(a[:, 2:] - c[:, 2:]).max(-1) > 1e-9)


# ----------------------------------------------------------------------------------------------- sliding window
@pytest.mark.parametrize("kind", ref.ATTENTIONS)
def test_sliding_window_one_attends_to_self(kind):
    cfg, params, tokens = setup(attention=kind, sliding_window=1, sigmoid_bias=-0.5)
    _, extra = run(cfg, params, tokens)
    probs = extra["attn_probs"][0]
    eye = np.eye(T, dtype=bool)
    assert np.all(probs[..., ~eye] == 0.0)
    assert np.all(probs[..., eye] > 0.0)
    if kind == "softmax":
        np.testing.assert_allclose(probs[..., eye], 1.0, atol=TOL)
    # with a window of 1 (and no position signal) the attention output at t equals a length-1 run on token t
    cfg_nope = dict(cfg, position="nope")
    full = run(cfg_nope, params, tokens)[1]["block_out"][0]
    for t in range(T):
        single = run(cfg_nope, params, tokens[:, t:t + 1])[1]["block_out"][0]
        np.testing.assert_allclose(full[:, t], single[:, 0], atol=TOL)


def test_sliding_window_two_support():
    cfg, params, tokens = setup(sliding_window=2)
    probs = run(cfg, params, tokens)[1]["attn_probs"][0]
    for t in range(T):
        for s in range(T):
            assert (probs[:, :, t, s] > 0).all() == (s in (t - 1, t))


# ----------------------------------------------------------------------------------------------- RoPE
def test_rope_relative_property():
    rng = np.random.default_rng(3)
    for dh in (2, 4, 6, 8):
        q, k = rng.standard_normal(dh), rng.standard_normal(dh)
        dots = {}
        for t in range(6):
            for s in range(6):
                base = ref.rope_vec(q, t, 10000.0) @ ref.rope_vec(k, s, 10000.0)
                for shift in (1, 5, 37):
                    shifted = ref.rope_vec(q, t + shift, 10000.0) @ ref.rope_vec(k, s + shift, 10000.0)
                    assert abs(base - shifted) < 1e-10
                dots.setdefault(t - s, base)
                assert abs(dots[t - s] - base) < 1e-10
        # rotation: norm preserved, identity at 0, and the dot product really depends on t - s
        np.testing.assert_allclose(ref.rope_vec(q, 0, 10000.0), q, atol=TOL)
        assert abs(np.linalg.norm(ref.rope_vec(q, 7, 10000.0)) - np.linalg.norm(q)) < 1e-12
        assert max(abs(dots[d] - dots[0]) for d in dots) > 1e-3


def test_rope_rotate_half_convention():
    theta = 100.0
    for t in (1, 3):
        np.testing.assert_allclose(ref.rope_vec(np.array([1.0, 0, 0, 0]), t, theta),
                                   [math.cos(t), 0, math.sin(t), 0], atol=TOL)
        a = t * theta ** -0.5
        np.testing.assert_allclose(ref.rope_vec(np.array([0, 1.0, 0, 0]), t, theta),
                                   [0, math.cos(a), 0, math.sin(a)], atol=TOL)
        np.testing.assert_allclose(ref.rope_vec(np.array([0, 0, 1.0, 0]), t, theta),
                                   [-math.sin(t), 0, math.cos(t), 0], atol=TOL)


# ----------------------------------------------------------------------------------------------- ALiBi
def test_alibi_closed_form():
    cfg, params, tokens = setup(position="alibi")
    probs = run(cfg, zero_qk(params), tokens)[1]["attn_probs"][0]
    slopes = [ref.alibi_slope(h, 4) for h in range(4)]
    assert slopes == [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]
    for h, m in enumerate(slopes):
        for t in range(T):
            w = np.array([math.exp(-m * (t - s)) if s <= t else 0.0 for s in range(T)])
            np.testing.assert_allclose(probs[:, h, t], np.broadcast_to(w / w.sum(), (2, T)), atol=TOL)


# ----------------------------------------------------------------------------------------------- norms
def test_rmsnorm_bound_and_unit_rms():
    rng = np.random.default_rng(4)
    D = 8
    for _ in range(50):
        x = rng.standard_normal(D) * 10.0 ** rng.uniform(-3, 3)
        scale = rng.standard_normal(D)
        y = ref.rms_norm_vec(x, scale, 1e-12)
        assert np.all(np.abs(y) <= math.sqrt(D) * np.abs(scale).max() + 1e-9)
        ms = np.mean(x * x)
        np.testing.assert_allclose(np.mean((y / scale) ** 2), ms / (ms + 1e-12), rtol=1e-9)
        y2 = ref.norm_vec(x, {"scale": scale}, "rmsnorm", 1e-12)
        np.testing.assert_allclose(y, y2, atol=TOL)
    # the bound is attained by a one-hot vector
    y = ref.rms_norm_vec(np.eye(D)[2] * 5.0, np.ones(D), 0.0)
    assert abs(y[2] - math.sqrt(D)) < 1e-12
    # eps enters inside the square root
    assert abs(ref.rms_norm_vec(np.zeros(D) + 1e-3, np.ones(D), 1e-6)[0] - 1e-3 / math.sqrt(1e-6 + 1e-6)) < 1e-12


def test_layernorm_and_dyt():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(8) * 3 + 2
    y = ref.norm_vec(x, {"scale": np.ones(8), "bias": np.zeros(8)}, "layernorm", 1e-12)
    assert abs(y.mean()) < 1e-12 and abs(y.var() - 1.0) < 1e-9
    p = {"scale": rng.standard_normal(8), "bias": rng.standard_normal(8)}
    y = ref.norm_vec(x, p, "layernorm", 1e-12)
    np.testing.assert_allclose(y, (x - x.mean()) / x.std() * p["scale"] + p["bias"], atol=1e-9)
    # eps inside the square root, with the population variance
    a = np.array([2.0, -2.0, 2.0, -2.0])
    np.testing.assert_allclose(ref.norm_vec(a, {"scale": np.ones(4), "bias": np.zeros(4)}, "layernorm", 0.5),
                               a / math.sqrt(4.0 + 0.5), atol=TOL)
    np.testing.assert_allclose(ref.norm_vec(np.full(8, 3.0), p, "layernorm", 1e-6), p["bias"], atol=TOL)
    p = dict(p, alpha=np.asarray(0.7))
    np.testing.assert_allclose(ref.norm_vec(x, p, "dyt", 1e-6), p["scale"] * np.tanh(0.7 * x) + p["bias"], atol=TOL)
    assert np.all(np.abs(ref.norm_vec(x * 1e6, p, "dyt", 1e-6)) <= np.abs(p["scale"]) + np.abs(p["bias"]) + 1e-12)


@pytest.mark.parametrize("placement,scope", [("pre", "head"), ("pre", "full"), ("sandwich_qk", "head"),
                                             ("sandwich_qk", "full")])
def test_qk_norm_makes_attention_scale_invariant(placement, scope):
    """QK-norm (explicit, or implied by sandwich_qk) makes the attention block invariant to scaling wq and wk."""
    cfg, params, tokens = setup(qk_norm=placement == "pre", qk_norm_scope=scope, norm_placement=placement,
                                norm_eps=1e-14)
    scaled = copy.deepcopy(params)
    scaled["blocks"][0]["mixer"]["wq"] *= 7.0
    scaled["blocks"][0]["mixer"]["wk"] *= 0.2
    a, b = run(cfg, params, tokens)[1], run(cfg, scaled, tokens)[1]
    np.testing.assert_allclose(a["attn_probs"][0], b["attn_probs"][0], atol=1e-9)
    # ...which fails without QK-norm
    cfg2 = dict(cfg, qk_norm=False, norm_placement="sandwich" if placement == "sandwich_qk" else "pre")
    p2 = ref.init_params(cfg2, 0, 8)
    s2 = copy.deepcopy(p2)
    s2["blocks"][0]["mixer"]["wq"] *= 7.0
    assert not np.allclose(run(cfg2, p2, tokens)[1]["attn_probs"][0], run(cfg2, s2, tokens)[1]["attn_probs"][0],
                           atol=1e-4)


# ----------------------------------------------------------------------------------------------- GQA
def expand_kv(params, group, scope):
    """Repeat every KV-head-indexed parameter `group` times so that kv head h belongs to query head h."""
    params = copy.deepcopy(params)
    for m in attention_mixers(params):
        for name in ("wk", "wv"):
            m[name] = np.repeat(m[name], group, axis=1)
        for name in ("bk", "bv", "k_bias", "v_bias"):
            if name in m:
                m[name] = np.repeat(m[name], group, axis=0)
        if "k_norm" in m and scope == "full":
            G = m["k_norm"]["scale"].size // m["wk"].shape[2]
            m["k_norm"]["scale"] = np.repeat(m["k_norm"]["scale"].reshape(G, -1), group, axis=0).reshape(-1)
    return params


@pytest.mark.parametrize("over", [
    dict(n_kv_heads=2),
    dict(n_kv_heads=1, attention="kv_bias", gate="cond_channel", ffn="attention"),
    dict(n_kv_heads=2, qkv_bias=True, qk_norm=True, qk_norm_scope="full", attention="k_bias"),
    dict(n_kv_heads=2, norm_placement="sandwich_qk", position="alibi", sliding_window=3),
    dict(n_kv_heads=1, qk_norm=True, attention="sink_logit", position="learned"),
])
def test_gqa_equals_repeated_kv_heads(over):
    cfg, params, tokens = setup(**over)
    H, G = cfg["n_heads"], cfg["n_kv_heads"]
    logits, extra = run(cfg, params, tokens)
    mha_cfg = dict(cfg, n_kv_heads=H)
    mha_logits, mha_extra = run(mha_cfg, expand_kv(params, H // G, cfg["qk_norm_scope"]), tokens)
    np.testing.assert_allclose(logits, mha_logits, atol=1e-11)
    for i in extra["attn_probs"]:
        np.testing.assert_allclose(extra["attn_probs"][i], mha_extra["attn_probs"][i], atol=1e-12)
    # n_kv_heads = 0 means n_heads
    np.testing.assert_allclose(ref.forward(expand_kv(params, H // G, cfg["qk_norm_scope"]), tokens,
                                           dict(cfg, n_kv_heads=0)), mha_logits, atol=TOL)


# ----------------------------------------------------------------------------------------------- gates
def block0_out(cfg, params, tokens):
    return run(cfg, params, tokens)[1]["block_out"][0]


def test_gate_identities():
    kw = dict(norm_placement="none", position="rope", n_layers=1)  # block 0 input x = embed[tokens]
    cfg, params, tokens = setup(**kw)
    H, dh, D = cfg["n_heads"], cfg["d_head"], cfg["d_model"]
    ungated = block0_out(cfg, params, tokens)
    rng = np.random.default_rng(9)

    def with_gate(gate, **p):
        q = copy.deepcopy(params)
        q["blocks"][0]["mixer"].update(p)
        return block0_out(ref.make_cfg(**kw, gate=gate), q, tokens)

    # cond_single with zero weights halves the output; uncond_* with a huge theta is (numerically) no gate
    np.testing.assert_allclose(with_gate("cond_single", gate_w=np.zeros((D, 1))), 0.5 * ungated, atol=TOL)
    np.testing.assert_allclose(with_gate("uncond_single", gate_theta=np.array([800.0])), ungated, atol=TOL)
    np.testing.assert_allclose(with_gate("uncond_single", gate_theta=np.array([-800.0])), 0 * ungated, atol=TOL)
    # channel gates constant over channels == head gates; head gates constant over heads == single gates
    th = rng.standard_normal(H)
    np.testing.assert_allclose(with_gate("uncond_channel", gate_theta=np.repeat(th[:, None], dh, 1)),
                               with_gate("uncond_head", gate_theta=th), atol=TOL)
    np.testing.assert_allclose(with_gate("uncond_head", gate_theta=np.full(H, 0.3)),
                               with_gate("uncond_single", gate_theta=np.array([0.3])), atol=TOL)
    gw = rng.standard_normal((D, H))
    np.testing.assert_allclose(with_gate("cond_channel", gate_w=np.repeat(gw[:, :, None], dh, 2)),
                               with_gate("cond_head", gate_w=gw), atol=TOL)
    np.testing.assert_allclose(with_gate("cond_head", gate_w=np.repeat(gw[:, :1], H, 1)),
                               with_gate("cond_single", gate_w=gw[:, :1]), atol=TOL)
    # block 0 without norms reads x = embed[tokens], so static_token == cond_head there
    np.testing.assert_allclose(with_gate("static_token", gate_w=gw), with_gate("cond_head", gate_w=gw), atol=TOL)
    # static_position with identical rows == uncond_head; a per-position table gates per position
    np.testing.assert_allclose(with_gate("static_position", gate_table=np.tile(th, (8, 1))),
                               with_gate("uncond_head", gate_theta=th), atol=TOL)
    # a channel gate acts per channel: closing channel 0 of every head == zeroing that row of wo
    theta = np.full((H, dh), 800.0)
    theta[:, 0] = -800.0
    no_ch0 = copy.deepcopy(params)
    no_ch0["blocks"][0]["mixer"]["wo"][:, 0, :] = 0.0
    np.testing.assert_allclose(with_gate("uncond_channel", gate_theta=theta), block0_out(cfg, no_ch0, tokens),
                               atol=TOL)
    table = np.zeros((8, H))
    table[3] = -800.0
    out = with_gate("static_position", gate_table=table)
    np.testing.assert_allclose(out[:, 3], 0.0, atol=TOL)
    np.testing.assert_allclose(np.delete(out, 3, axis=1), 0.5 * np.delete(ungated, 3, axis=1), atol=TOL)


def test_static_token_gate_on_constant_sequence_equals_uncond_head():
    """On a sequence of one repeated token, static_token's gate is the constant sigmoid(embed[tok] @ gate_w),
    in every attention block (whose mixer input is N(h), not the embedding), i.e. uncond_head with that theta."""
    cfg, params, _ = setup(gate="static_token", n_layers=2, position="learned")
    tok = 3
    tokens = np.full((1, T), tok)
    theta = {i: params["embed"][tok] @ params["blocks"][i]["mixer"]["gate_w"] for i in (0, 2)}
    q = copy.deepcopy(params)
    for i in (0, 2):
        q["blocks"][i]["mixer"]["gate_theta"] = theta[i]
        del q["blocks"][i]["mixer"]["gate_w"]
    np.testing.assert_allclose(ref.forward(params, tokens, cfg), ref.forward(q, tokens, dict(cfg, gate="uncond_head")),
                               atol=TOL)


def test_static_token_gate_reads_input_embedding_not_mixer_input():
    """static_token reads embed[token] even where the mixer input is normalised (pre) or the block is later."""
    cfg, params, tokens = setup(gate="static_token", n_layers=2, B=1)
    # a gate of ~0 for one token id (via its embedding) kills that position's attention output in every block
    tok = int(tokens[0, 4])
    q = copy.deepcopy(params)
    H = cfg["n_heads"]
    direction = q["embed"][tok] / np.linalg.norm(q["embed"][tok]) ** 2
    for i in (0, 2):
        q["blocks"][i]["mixer"]["gate_w"] = -1e4 * np.repeat(direction[:, None], H, 1)
    _, ex2 = run(cfg, q, tokens)
    for i in (0, 2):
        np.testing.assert_allclose(ex2["block_out"][i][0, 4], 0.0, atol=1e-12)
        # positions whose token embedding points away from `direction` get a gate of ~1 instead
        open_ = params["embed"][tokens[0]] @ direction < -0.05
        assert open_.any() and np.all(np.abs(ex2["block_out"][i][0, open_]).max(-1) > 1e-6)


# ----------------------------------------------------------------------------------------------- bookkeeping
@pytest.mark.parametrize("placement", ref.PLACEMENTS)
@pytest.mark.parametrize("norm_type", ref.NORM_TYPES)
def test_residual_bookkeeping_and_final_head(placement, norm_type):
    cfg, params, tokens = setup(norm_placement=placement, norm_type=norm_type, n_layers=2,
                                tie_embeddings=norm_type == "dyt", position="learned", norm_eps=1e-12)
    logits, extra = run(cfg, params, tokens)
    res, out = extra["residual"], extra["block_out"]
    assert len(res) == 5 and len(out) == 4 and sorted(extra["attn_probs"]) == [0, 2]
    np.testing.assert_allclose(res[0], params["embed"][tokens] + params["pos_embed"][:T], atol=TOL)
    for i in range(4):
        bp = params["blocks"][i]
        if placement == "post":
            want = np.stack([ref.norm_rows(r, bp["norm_out"], norm_type, cfg["norm_eps"]) for r in res[i] + out[i]])
        else:
            want = res[i] + out[i]
        np.testing.assert_allclose(res[i + 1], want, atol=TOL)
        if placement in ("sandwich", "sandwich_qk") and norm_type == "rmsnorm":
            scale = bp["norm_out"]["scale"]
            np.testing.assert_allclose(np.mean((out[i] / scale) ** 2, -1), 1.0, rtol=1e-4)
    head = params["embed"].T if cfg["tie_embeddings"] else params["head"]
    assert ("head" in params) != cfg["tie_embeddings"]
    final = res[-1] if placement == "none" else np.stack(
        [ref.norm_rows(r, params["final_norm"], norm_type, cfg["norm_eps"]) for r in res[-1]])
    np.testing.assert_allclose(logits, final @ head, atol=TOL)
    assert ("final_norm" in params) == (placement != "none")


def test_mixer_input_is_h_for_post_and_normed_h_for_pre():
    """post feeds the mixer the raw residual h (the norm comes after the add); pre feeds it N_in(h)."""
    cfg, params, tokens = setup(norm_placement="post", ffn="linear", n_layers=1)
    _, extra = run(cfg, params, tokens)
    h = extra["residual"][1]
    np.testing.assert_allclose(extra["block_out"][1], h @ params["blocks"][1]["mixer"]["w"], atol=TOL)
    cfg, params, tokens = setup(norm_placement="pre", ffn="linear", n_layers=1)
    _, extra = run(cfg, params, tokens)
    x = np.stack([ref.norm_rows(r, params["blocks"][1]["norm_in"], "rmsnorm", cfg["norm_eps"])
                  for r in extra["residual"][1]])
    np.testing.assert_allclose(extra["block_out"][1], x @ params["blocks"][1]["mixer"]["w"], atol=TOL)


# ----------------------------------------------------------------------------------------------- FFNs
def test_ffn_formulas():
    rng = np.random.default_rng(6)
    z = rng.standard_normal(50) * 3
    exact_gelu = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in z])
    assert np.abs(ref.gelu_tanh(z) - exact_gelu).max() < 2e-3
    np.testing.assert_allclose(ref.silu(z), z / (1 + np.exp(-z)), atol=TOL)
    for ffn in ("swiglu", "gelu", "linear"):
        cfg, params, tokens = setup(ffn=ffn, norm_placement="none")
        _, extra = run(cfg, params, tokens)
        x, m = extra["residual"][1], params["blocks"][1]["mixer"]
        if ffn == "swiglu":
            a = x @ m["w_gate"]
            want = (a / (1 + np.exp(-a)) * (x @ m["w_up"])) @ m["w_down"]
        elif ffn == "gelu":
            a = x @ m["w_in"]
            want = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))) @ m["w_out"]
        else:
            want = x @ m["w"]
        np.testing.assert_allclose(extra["block_out"][1], want, atol=TOL)


def test_attention_matches_vectorised_softmax():
    """Per-head loop reference vs an independent vectorised computation (baseline softmax, RoPE, GQA, bias)."""
    cfg, params, tokens = setup(n_kv_heads=2, qkv_bias=True, norm_placement="none", n_layers=1, gate="cond_channel")
    _, extra = run(cfg, params, tokens)
    m = params["blocks"][0]["mixer"]
    x = extra["residual"][0]  # [B, T, D]
    dh = cfg["d_head"]
    q = np.einsum("btd,dhk->bthk", x, m["wq"]) + m["bq"]
    k = np.einsum("btd,dgk->btgk", x, m["wk"]) + m["bk"]
    v = np.einsum("btd,dgk->btgk", x, m["wv"]) + m["bv"]
    pos = np.arange(T)[:, None] * cfg["rope_theta"] ** (-np.arange(dh // 2) * 2.0 / dh)[None]  # [T, dh/2]
    cos, sin = np.cos(pos)[None, :, None], np.sin(pos)[None, :, None]

    def rot(u):
        u1, u2 = u[..., : dh // 2], u[..., dh // 2:]
        return np.concatenate([u1 * cos - u2 * sin, u2 * cos + u1 * sin], -1)

    q, k = rot(q), rot(k)
    k, v = np.repeat(k, 2, axis=2), np.repeat(v, 2, axis=2)
    logits = np.einsum("bthk,bshk->bhts", q, k) / math.sqrt(dh)
    logits = np.where(causal_mask(T), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(extra["attn_probs"][0], p, atol=1e-12)
    y = np.einsum("bhts,bshk->bthk", p, v)
    y = y / (1.0 + np.exp(-np.einsum("btd,dhk->bthk", x, m["gate_w"])))
    np.testing.assert_allclose(extra["block_out"][0], np.einsum("bthk,hkd->btd", y, m["wo"]), atol=1e-12)


# ----------------------------------------------------------------------------------------------- loss / init
def test_loss():
    cfg, params, tokens = setup(B=3, T_=7)
    targets = np.roll(tokens, -1, axis=1)
    logits = ref.forward(params, tokens, cfg)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    assert abs(ref.loss(params, tokens, targets, cfg) - nll.mean()) < 1e-12
    assert abs(ref.loss(params, tokens, targets, cfg, 2, 5) - nll[:, 2:5].mean()) < 1e-12
    assert abs(ref.loss(params, tokens, targets, cfg, loss_start=4) - nll[:, 4:].mean()) < 1e-12
    zero_head = copy.deepcopy(params)
    zero_head["head"][:] = 0.0
    assert abs(ref.loss(zero_head, tokens, targets, cfg) - math.log(cfg["vocab_size"])) < 1e-12


@pytest.mark.parametrize("over", [
    dict(), dict(norm_placement="none", position="learned", tie_embeddings=True),
    dict(norm_type="dyt", norm_placement="sandwich", attention="kv_bias", gate="static_position"),
    dict(norm_placement="sandwich_qk", qk_norm_scope="full", n_kv_heads=2, ffn="attention", gate="cond_channel"),
    dict(norm_type="layernorm", norm_placement="post", qkv_bias=True, ffn="gelu", gate="uncond_channel"),
])
def test_init_params_layout(over):
    cfg = ref.make_cfg(**over)
    params = ref.init_params(cfg, 0, 8)
    D, H, G, dh = cfg["d_model"], cfg["n_heads"], ref.n_kv_heads(cfg), cfg["d_head"]
    assert params["embed"].shape == (cfg["vocab_size"], D) and params["embed"].dtype == np.float64
    assert ("pos_embed" in params) == (cfg["position"] == "learned")
    assert sorted(params["blocks"]) == [0, 1]
    for i, bp in params["blocks"].items():
        assert ("norm_in" in bp) == (cfg["norm_placement"] in ("pre", "sandwich"))
        assert ("norm_out" in bp) == (cfg["norm_placement"] in ("post", "sandwich", "sandwich_qk"))
        for nm in ("norm_in", "norm_out"):
            if nm in bp:
                want = {"rmsnorm": {"scale"}, "layernorm": {"scale", "bias"}, "dyt": {"scale", "bias", "alpha"}}
                assert set(bp[nm]) == want[cfg["norm_type"]]
                if cfg["norm_type"] == "dyt":
                    assert bp[nm]["alpha"].shape == ()
        m = bp["mixer"]
        if "wq" in m:
            assert m["wq"].shape == (D, H, dh) and m["wk"].shape == (D, G, dh) and m["wo"].shape == (H, dh, D)
            if "q_norm" in m:
                full = cfg["qk_norm_scope"] == "full"
                assert m["q_norm"]["scale"].shape == ((H * dh,) if full else (dh,))
                assert m["k_norm"]["scale"].shape == ((G * dh,) if full else (dh,))
    logits = ref.forward(params, np.zeros((1, 5), dtype=int), cfg)
    assert logits.shape == (1, 5, cfg["vocab_size"]) and np.all(np.isfinite(logits))
