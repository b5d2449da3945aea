"""KV-cache decoding: exact with a budget >= T, planted checks of which tokens each policy keeps, and
StreamingLLM's re-assigned positions."""
import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_model import random_params
from variants import spec
from jaxsink.impact import kvcache
from jaxsink.impact.kvcache import CacheError, CachePolicy
from jaxsink.model import apply, build, split


def _model(name="baseline", **extra):
    s = spec(name, **extra)
    graphdef, params = split(build(s, seed=1))
    return s, graphdef, random_params(params, seed=5)


@pytest.mark.parametrize("name,policy", [
    ("baseline", CachePolicy("full", 9)), ("sandwich_qk", CachePolicy("window", 9)),
    ("gqa", CachePolicy("streaming", 12, sinks=4)), ("kv_bias", CachePolicy("h2o", 9, recent=2)),
    ("gate_static_position", CachePolicy("h2o", 10, recent=3)), ("alibi", CachePolicy("streaming", 9, sinks=1))])
def test_budget_at_least_length_equals_full_forward(name, policy):
    s, graphdef, params = _model(name)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, s.vocab_size, (2, 9)))
    want = np.asarray(apply(graphdef, params, tokens)[0])
    got = np.asarray(jax.jit(lambda p, t: kvcache.decode(graphdef, p, t, policy))(params, tokens))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_kept_tokens_planted():
    s, graphdef, params = _model()
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, s.vocab_size, (1, 11)))
    kept = lambda pol: np.sort(np.asarray(kvcache.kept_tokens(graphdef, params, tokens, pol)), -1)  # noqa: E731
    assert (kept(CachePolicy("window", 4)) == [7, 8, 9, 10]).all()
    assert (kept(CachePolicy("streaming", 5, sinks=2)) == [0, 1, 8, 9, 10]).all()
    h2o = kept(CachePolicy("h2o", 5, recent=2))[0]
    assert h2o.shape == (s.n_layers, 5) and (h2o[:, -2:] == [9, 10]).all() and (h2o >= 0).all()


def test_h2o_evicts_least_attended_outside_recent():
    idx = jnp.asarray([0, 1, 2, 3, 4, -1])
    score = jnp.asarray([5.0, 0.1, 3.0, 0.05, 9.0, 0.0])
    policy = CachePolicy("h2o", 6, recent=2)
    assert int(jnp.argmin(kvcache._priority(policy, idx, score, 5))) == 5          # the empty slot first
    full = idx.at[5].set(5)
    # recent = {4, 5} protected although 4 has the largest score... slot 3 (score 0.05) goes
    assert int(jnp.argmin(kvcache._priority(policy, full, score, 6))) == 3
    assert int(jnp.argmin(kvcache._priority(CachePolicy("streaming", 6, sinks=2), full, score, 6))) == 2


def test_streaming_positions_are_reassigned():
    """One layer: K/V depend on the token only, so decoding with sinks=1, budget=4 ends exactly like a full
    forward over [t0, t_{T-3}, t_{T-2}, t_{T-1}] (positions 0..3 inside the cache, keys rotated by them)."""
    s, graphdef, params = _model(n_layers=1)
    tokens = np.random.default_rng(2).integers(0, s.vocab_size, (2, 10))
    got = np.asarray(kvcache.decode(graphdef, params, jnp.asarray(tokens), CachePolicy("streaming", 4, sinks=1)))
    squeezed = np.concatenate([tokens[:, :1], tokens[:, -3:]], axis=1)
    want = np.asarray(apply(graphdef, params, jnp.asarray(squeezed))[0])
    np.testing.assert_allclose(got[:, -1], want[:, -1], rtol=2e-5, atol=2e-5)
    assert not np.allclose(got[:, -1], np.asarray(apply(graphdef, params, jnp.asarray(tokens))[0])[:, -1], atol=1e-3)


def test_bad_policies():
    with pytest.raises(CacheError, match="unknown cache policy"):
        CachePolicy("lru", 8)
    with pytest.raises(CacheError, match="no room"):
        CachePolicy("streaming", 4, sinks=4)
    s, graphdef, params = _model()
    with pytest.raises(CacheError, match="budget >= sequence length"):
        kvcache.decode(graphdef, params, jnp.zeros((1, 9), jnp.int32), CachePolicy("full", 4))


def test_passkey_corpus_and_retrieval():
    from jaxsink.config import load_config
    from jaxsink.data.tokenizer import ByteTokenizer
    from jaxsink.impact import passkey
    tokens, start = passkey.prompts(ByteTokenizer(), True, n=3, filler_sentences=2)
    assert tokens.shape[0] == 3 and bytes(tokens[0, start:].astype(np.uint8)).decode().isdigit()
    assert tokens.shape[1] - start == 5 and tokens[0, 0] == ByteTokenizer().bos_id
    assert load_config("configs/tiny_passkey.py").data.corpus == "passkey"
    s, graphdef, params = _model(vocab_size=264, max_seq_len=128)
    logits = np.asarray(apply(graphdef, params, jnp.asarray(tokens))[0])
    want = np.mean(np.all(logits[:, start - 1:-1].argmax(-1) == tokens[:, start:], axis=1))
    policy = CachePolicy("full", tokens.shape[1])
    assert passkey.retrieval_accuracy(graphdef, params, tokens, start, policy) == want


def test_passkey_part_of_the_runner(tmp_path):
    """`--parts passkey`: one row per policy; the full cache's answer perplexity and accuracy equal those of the
    plain forward (float64 NumPy log-softmax); a budget not below the prompt length is refused."""
    from jaxsink.data.tokenizer import ByteTokenizer
    from jaxsink.impact import passkey, runner
    from jaxsink.model.loaded import LoadedModel
    s, graphdef, params = _model(vocab_size=264, max_seq_len=128)
    model = LoadedModel(graphdef, params, s, ByteTokenizer(), True, "random")
    opts = runner.ImpactOptions(seq_len=16, num_sequences=2, batch_size=2, calib_sequences=1, parts=("passkey",),
                                budgets=(40,), sinks=2, progress=False, plots=True, passkey_prompts=3,
                                passkey_filler=2)
    result = runner.impact(model, "abcdefgh" * 200, tmp_path, opts)
    assert result.plots == [str(tmp_path / "impact_passkey.png")]
    assert (tmp_path / "impact_passkey.png").stat().st_size > 1000
    rows = result.to_json()["passkey"]
    assert [r["policy"] for r in rows] == ["full:" + str(rows[0]["budget"]), "window:40", "streaming:2+38",
                                           "h2o:heavy+20"]
    tokens, start = passkey.prompts(ByteTokenizer(), True, n=3, filler_sentences=2)
    logits = np.asarray(apply(graphdef, params, jnp.asarray(tokens))[0], np.float64)[:, start - 1:-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[:, start:, None], -1).mean()
    assert rows[0]["answer_perplexity"] == pytest.approx(np.exp(nll), rel=1e-4)
    assert rows[0]["accuracy"] == np.mean(np.all(logits.argmax(-1) == tokens[:, start:], axis=1))
    assert json.loads((tmp_path / "impact.json").read_text())["passkey"] == rows
    from jaxsink.impact.tables import passkey_table
    assert passkey_table({"passkey": rows}).splitlines()[3].startswith("| window:40 | 40 | ")
    with pytest.raises(CacheError, match="not below the prompt length"):
        runner.impact(model, "abcdefgh" * 200, tmp_path, dataclasses.replace(opts, budgets=(500,)))


def test_passkey_rows_are_one_document_from_bos_with_its_answer_repeated():
    """The generated corpus (`jaxsink.data.passkey`): every row is one document from BOS whose key (distinct
    digits, after the only `#` before the question) is the answer of every question that follows; rows are a
    pure function of (seed, step); the held-out split is whole rows of another stream."""
    import re
    from jaxsink.data import passkey
    from jaxsink.data.generated import generator
    from jaxsink.workdir import load_data
    from jaxsink.config import load_config
    inputs, targets = passkey.train_batch(seed=3, step=7, batch_size=64, seq_len=384, bos_id=256)
    again, _ = passkey.train_batch(seed=3, step=7, batch_size=64, seq_len=384, bos_id=256)
    other, _ = passkey.train_batch(seed=3, step=8, batch_size=64, seq_len=384, bos_id=256)
    assert (inputs == again).all() and not (inputs == other).all()
    assert inputs.shape == targets.shape == (64, 384) and (inputs[:, 0] == 256).all()
    assert (inputs[:, 1:] == targets[:, :-1]).all()
    fillers = set()
    for row in targets:
        text = bytes(row.astype(np.uint8)).decode("ascii")
        key = re.match(r"(?:[a-z .]{20})*the pass key is #(\d{5})\. remember it\. ", text).group(1)
        assert len(set(key)) == 5
        first_question = text.index("what is the pass key?")
        assert text[:first_question].count("#") == 1
        fillers.add((first_question - 37) // 20)
        answers = re.findall(r"the pass key is #(\d+)", text[first_question:])
        assert answers[0] == key and all(key.startswith(a) for a in answers)
    assert fillers == set(range(13))          # 0..12 filler sentences
    assert generator("passkey") is passkey and generator("shakespeare") is None
    cfg = load_config("configs/tiny_passkey.py")
    tok, splits = load_data(cfg, pathlib.Path("/nonexistent-workdir"))
    held = splits.heldout.reshape(-1, cfg.train.seq_len)
    assert held.shape == (256, 384) and held[:, :16].tolist().count(list(b"the pass key is ")) >= 1
    assert not np.array_equal(held, splits.train.reshape(-1, 384))
