"""Guo et al.'s Bigram-Backcopy testbed: the `bb_guo` generator against a plain-loop NumPy reference of
their `bbm.gen_seq` rules, the BOS-sink statistics and ReLU attention / ReLU FFN against float64 NumPy
references, and the config building the model it describes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsink.config import ConfigError, load_config, validate
from jaxsink.data import bb_guo
from jaxsink.model import ModelSpec, apply, build, collect, split
from jaxsink.model.attention import attention_probs
from jaxsink.stats import bos_sink


# ----------------------------------------------------------------------------- the generator

def _reference_sequences(cond, start, triggers, u):
    """Their rules, one token at a time: x_1 ~ start; after a trigger, copy the token before it; else a
    bigram draw (inverse CDF of the row at the uniform, float64 running sum)."""
    out = []
    for row in u:
        seq = [_draw(start, row[0])]
        for i in range(1, len(row)):
            x = seq[-1]
            seq.append(seq[-2] if (x in triggers and i >= 2) else _draw(cond[x], row[i]))
        out.append(seq)
    return np.array(out)


def _draw(p, u):
    total = 0.0
    for j, pj in enumerate(p):
        total += pj
        if u < total:
            return j
    return len(p) - 1


def _planted_task(seed=0, v=9):
    rng = np.random.default_rng(seed)
    cond = rng.dirichlet(np.full(v, 0.5), size=v)
    start = rng.dirichlet(np.ones(v))
    triggers = (1, 4, 6)
    start[list(triggers)] = 0
    return bb_guo.GuoTask(cond=cond, start=start / start.sum(), triggers=triggers,
                          byte_ids=np.arange(v, dtype=np.int32) + 40)


def test_generator_equals_the_loop_reference_on_the_same_uniforms():
    task = _planted_task()
    u = np.random.default_rng(3).random((6, 50))
    got = bb_guo.generate(task, u)
    want = _reference_sequences(task.cond, task.start, set(task.triggers), u)
    np.testing.assert_array_equal(got, want)


def test_rules_hold_on_the_shipped_task():
    task = bb_guo.shipped_task()
    assert [bb_guo.ALPHABET[i] for i in task.triggers] == [" ", "e", "t"]     # the 3 most frequent
    assert len(bb_guo.ALPHABET) == 65 and task.cond.shape == (65, 65)
    np.testing.assert_allclose(task.cond.sum(axis=1), 1.0, atol=1e-12)
    x = bb_guo.generate(task, np.random.default_rng(0).random((8, 256)))
    trig = np.isin(x, task.triggers)
    assert not trig[:, 0].any()                                     # x_1 is never a trigger
    assert not (trig[:, 1:] & trig[:, :-1]).any()                   # never two triggers in a row
    after = trig[:, 1:-1]                                           # x_i is a trigger, i >= 1
    np.testing.assert_array_equal(x[:, 2:][after], x[:, :-2][after])   # the copy of x_{i-1}
    assert 0.15 < trig.mean() < 0.35


def test_estimate_counts_bigrams_within_the_alphabet():
    text = "ab\nab{a ba"           # '{' is outside the alphabet: the pairs (b,{) and ({,a) are skipped
    task = bb_guo.estimate(text, k=1)
    a, b, nl, sp = (bb_guo.ALPHABET.index(c) for c in "ab\n ")
    assert task.cond[a, b] == pytest.approx(2 / 3) and task.cond[a, sp] == pytest.approx(1 / 3)
    assert task.cond[b, nl] == pytest.approx(0.5) and task.cond[b, a] == pytest.approx(0.5)
    assert task.cond[sp, b] == pytest.approx(1.0)
    assert task.triggers == (a,)                                    # 'a' is the most frequent
    assert task.start[a] == 0 and task.start.sum() == pytest.approx(1.0)


def test_batches_start_at_bos_and_are_a_function_of_seed_and_step():
    i1, t1 = bb_guo.train_batch(seed=1, step=7, batch_size=4, seq_len=32, bos_id=256)
    i2, t2 = bb_guo.train_batch(seed=1, step=7, batch_size=4, seq_len=32, bos_id=256)
    i3, _ = bb_guo.train_batch(seed=1, step=8, batch_size=4, seq_len=32, bos_id=256)
    np.testing.assert_array_equal(i1, i2)
    assert not np.array_equal(i1, i3)
    assert (i1[:, 0] == 256).all() and (i1[:, 1:] == t1[:, :-1]).all()
    assert set(np.unique(t1)) <= {ord(c) for c in bb_guo.ALPHABET}
    splits = bb_guo.token_splits(32)
    assert len(splits.heldout) == bb_guo.HELDOUT_SEQUENCES * 32


# ----------------------------------------------------------------------------- statistics

def test_bos_statistics_match_float64_numpy():
    rng = np.random.default_rng(0)
    b, h, t, d = 3, 2, 7, 5
    logits = rng.normal(size=(b, h, t, t))
    logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    inputs = rng.integers(0, 6, size=(b, t))
    triggers = (1, 3)
    mask = ~np.isin(inputs, triggers)
    want = [np.mean([probs[i, j, s, 0] for i in range(b) for s in range(t) if mask[i, s]]) for j in range(h)]
    got_mask = bos_sink.nontrigger_queries(jnp.asarray(inputs), triggers)
    np.testing.assert_array_equal(np.asarray(got_mask), mask)
    np.testing.assert_allclose(bos_sink.bos_attention(jnp.asarray(probs), got_mask), want, rtol=1e-5)
    v = rng.normal(size=(b, t, h, d))
    np.testing.assert_allclose(bos_sink.bos_value_norm(jnp.asarray(v)),
                               [np.mean([np.sqrt(np.sum(v[i, 0, j] ** 2)) for i in range(b)]) for j in range(h)],
                               rtol=1e-5)
    res = rng.normal(size=(b, t, d))
    norms = np.sqrt((res ** 2).sum(-1))
    assert float(bos_sink.bos_residual_norm(jnp.asarray(res))) == pytest.approx(norms[:, 0].mean(), rel=1e-5)
    assert float(bos_sink.bos_residual_ratio(jnp.asarray(res))) == pytest.approx(
        np.mean(norms[:, 0] / np.median(norms[:, 1:], axis=1)), rel=1e-5)


def test_planted_sink_reads_one_and_uniform_reads_the_harmonic_mean():
    t = 256
    sink = np.zeros((1, 1, t, t))
    sink[..., 0] = 1.0
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    mask = jnp.ones((1, t), bool)
    assert float(bos_sink.bos_attention(jnp.asarray(sink), mask)[0]) == pytest.approx(1.0)
    assert float(bos_sink.bos_attention(jnp.asarray(uniform[None, None]), mask)[0]) == pytest.approx(
        np.mean(1 / np.arange(1, t + 1)), rel=1e-5)                  # 0.024: Guo et al.'s step-0 value
    planted = np.ones((2, 5, 4))
    planted[:, 0] *= 100.0
    assert float(bos_sink.bos_residual_ratio(jnp.asarray(planted))) == pytest.approx(100.0)


# ----------------------------------------------------------------------------- ReLU attention and the model

def test_relu_attention_matches_guo_et_al():
    """probs[t, s] = relu(q_t . k_s / sqrt(d)) / (t + 1) on visible keys (their `attn_use_relu`)."""
    rng = np.random.default_rng(1)
    b, t, h, d = 2, 6, 2, 4
    q, k = rng.normal(size=(b, t, h, d)), rng.normal(size=(b, t, h, d))
    want = np.zeros((b, h, t, t))
    for i in range(b):
        for j in range(h):
            for a in range(t):
                for s in range(a + 1):
                    want[i, j, a, s] = max(q[i, a, j] @ k[i, s, j] / np.sqrt(d), 0.0) / (a + 1)
    pos = jnp.arange(t)
    got, extra = attention_probs(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), kind="relu",
                                 q_pos=pos, k_pos=pos)
    assert extra is None
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def _layernorm(x, scale, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _guo_reference(p, tokens, attention, eps):
    """Guo et al.'s 1-layer model (BBM/model.py), float64: pre-LayerNorm, learned positions, one head,
    ReLU FFN, final LayerNorm, untied head."""
    blk0, blk1 = p["blocks"][0], p["blocks"][1]
    t = tokens.shape[1]
    h = p["embed"][tokens] + p["pos_embed"][:t][None]
    x = _layernorm(h, blk0["norm_in"]["scale"], blk0["norm_in"]["bias"], eps)
    a = blk0["mixer"]
    q, k, v = (np.einsum("btd,dhk->bthk", x, a[w]) for w in ("wq", "wk", "wv"))
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    vis = np.tril(np.ones((t, t), bool))
    if attention == "relu":
        probs = np.where(vis, np.maximum(logits, 0), 0) / np.arange(1, t + 1)[:, None]
    else:
        e = np.exp(np.where(vis, logits, -np.inf) - logits.max(-1, keepdims=True))
        probs = e / e.sum(-1, keepdims=True)
    h = h + np.einsum("bhts,bshk,hkd->btd", probs, v, a["wo"])
    x = _layernorm(h, blk1["norm_in"]["scale"], blk1["norm_in"]["bias"], eps)
    h = h + np.maximum(x @ blk1["mixer"]["w_in"], 0) @ blk1["mixer"]["w_out"]
    h = _layernorm(h, p["final_norm"]["scale"], p["final_norm"]["bias"], eps)
    return h @ p["head"]


@pytest.mark.parametrize("attention", ["softmax", "relu"])
def test_bb_guo_model_matches_a_numpy_reference_of_their_architecture(attention):
    cfg = load_config("bb_guo", ["model.d_model=16", "model.d_head=16", "model.d_ff=32", "model.max_seq_len=12",
                                 "train.seq_len=12", f"model.attention={attention}"])
    validate(cfg)
    spec = ModelSpec.from_config(cfg.model, 257)
    graphdef, params = split(build(spec, seed=3))
    rng = np.random.default_rng(0)
    # random norm parameters so the LayerNorm scale and bias are exercised too
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.3 * rng.normal(size=x.shape) if str(path[-1].key) in ("scale", "bias") else x, params)
    tokens = rng.integers(0, 257, size=(2, 12))
    logits, _ = apply(graphdef, params, jnp.asarray(tokens))
    p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    np.testing.assert_allclose(np.asarray(logits), _guo_reference(p64, tokens, attention, 1e-5), rtol=2e-4, atol=2e-4)
    assert float(np.std(np.asarray(params["embed"]))) == pytest.approx(1.0, rel=0.05)   # embed_init_std


def test_bb_guo_needs_the_byte_tokenizer():
    with pytest.raises(ConfigError, match="data.tokenizer"):
        validate(load_config("bb_guo", ["data.tokenizer=bpe"]))


def test_training_statistics_log_the_bos_dynamics():
    from jaxsink.train.stats import training_stats
    cfg = load_config("bb_guo", ["model.d_model=16", "model.d_head=16", "model.d_ff=32", "model.max_seq_len=32",
                                 "train.seq_len=32"])
    spec = ModelSpec.from_config(cfg.model, 257)
    graphdef, params = split(build(spec, seed=0))
    capture, fn = training_stats(cfg)
    inputs, _ = bb_guo.train_batch(seed=0, step=0, batch_size=4, seq_len=32, bos_id=256)
    _, inter = apply(graphdef, params, jnp.asarray(inputs), capture)
    out = fn(inter, inputs=jnp.asarray(inputs))
    c = collect(inter, 2)
    mask = ~np.isin(inputs, bb_guo.shipped_task().trigger_ids)
    probs = np.asarray(c["attn_probs"][1])[:, 0]
    assert float(out["bos/attention"][0]) == pytest.approx(probs[..., 0][mask].mean(), rel=1e-5)
    assert out["bos/residual_norm"].shape == (2,) and out["bos/value_norm"].shape == (1,)


# ----------------------------------------------------------------------------- the seeded verdicts

def test_seeded_verdict_rules_on_planted_tables():
    from jaxsink.bb_seeds import bootstrap, judge
    point, low, high, n = bootstrap([1.0, 2.0, 3.0])
    assert point == 2.0 and 1.0 <= low <= point <= high <= 3.0 and n == 3
    assert tuple(bootstrap([4.0, 4.0, 4.0]))[:3] == (4.0, 4.0, 4.0)
    ratio = bootstrap([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], "ratio")
    assert ratio.mean == pytest.approx(2.0) and ratio.lo == pytest.approx(2.0)
    sink = {"bos_attention": [0.8, 0.85, 0.9], "bos_norm": [50.0, 55.0, 60.0], "loss": [1.8] * 3}
    none = {"bos_attention": [0.1, 0.12, 0.15], "bos_norm": [20.0, 21.0, 22.0], "loss": [1.8] * 3}
    mixed = {"bos_attention": [0.2, 0.9, 0.3], "bos_norm": [50.0, 20.0, 60.0], "loss": [1.8] * 3}
    assert judge("keeps_sink", sink, sink)[0] == "agrees"
    assert judge("keeps_sink", none, sink)[0] == "disagrees"
    assert judge("keeps_sink", mixed, sink)[0] == "inconclusive"
    assert judge("keeps_sink", sink, none)[0] == "inconclusive"       # the reference has no sink
    assert judge("removes_sink", none, sink)[0] == "agrees"
    assert judge("cuts_spike", none, sink)[0] == "agrees" and judge("cuts_spike", sink, none)[0] == "disagrees"
    assert judge("keeps_spike", sink, sink)[0] == "agrees"
    assert judge("more_sink", sink, none)[0] == "agrees" and judge("more_sink", none, sink)[0] == "disagrees"
    diverged = {**none, "loss": [5.0] * 3}
    assert judge("cuts_spike", diverged, sink)[0] == "inconclusive"


def test_training_bos_statistics_read_the_whole_sequence(tmp_path):
    """The logged `bos/attention` of a real training run equals the float64 mean, over every non-trigger
    query of the whole T = 96 sequence, of the first step's attention on BOS (Guo et al.'s definition). The
    statistics pass used to stop at `stats.sink_seq_len` = 64 positions, which reads a different quantity
    (uniform attention: 0.074 over 64 positions, 0.024 over 256)."""
    import json
    from jaxsink.train.loop import train
    from jaxsink.train.setup import Run
    from jaxsink.train.stats import training_stats
    cfg = load_config("bb_guo", ["model.d_model=16", "model.d_head=16", "model.d_ff=32", "model.max_seq_len=96",
                                 "train.seq_len=96", "train.batch_size=2", "train.steps=1", "stats.every=1",
                                 "train.checkpoint_every=0", "train.log_every=1"])
    assert cfg.stats.sink_seq_len < cfg.train.seq_len
    one = jax.devices()[:1]
    train(cfg, tmp_path, devices=one, progress=False, stats=training_stats(cfg))
    logged = next(json.loads(line) for line in open(tmp_path / "metrics.jsonl") if "bos/attention" in line)
    run = Run.create(cfg, tmp_path, devices=one)
    params = run.init_state()["params"]
    inputs = np.asarray(run.train_batch(0)["inputs"])[0]                 # the first micro-batch [B, T]
    _, inter = apply(run.graphdef, params, jnp.asarray(inputs), ("attn_probs",))
    probs = np.asarray(collect(inter, 2)["attn_probs"][1], np.float64)[:, 0]      # [B, T, T], the one head
    mask = ~np.isin(inputs, bb_guo.shipped_task().trigger_ids)
    assert logged["bos/attention"][0] == pytest.approx(probs[..., 0][mask].mean(), rel=1e-4)
