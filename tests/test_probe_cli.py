"""The probe end to end on a freshly trained tiny model: JSON schema, plots, blockwise == dense, and the
training-time statistics agree with the post-hoc probe functions."""
import json

import jax
import numpy as np
import pytest

from jaxsink import stats
from jaxsink.cli import main
from jaxsink.config import load_config
from jaxsink.probe import passes, pipeline
from jaxsink.train.loop import train
from jaxsink.train.metrics import read_metrics
from jaxsink.train.setup import load_trained
from jaxsink.train.stats import training_stats

OVERRIDES = ["model.d_model=32", "model.d_head=8", "model.d_ff=64", "train.seq_len=32", "train.batch_size=8",
             "train.steps=20", "train.log_every=5", "train.checkpoint_every=10", "train.eval_sequences=8",
             "train.warmup_steps=2", "stats.every=10", "stats.sink_seq_len=16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    corpus = root / "c.txt"
    corpus.write_text("To be, or not to be, that is the question. Whether 'tis nobler in the mind.\n" * 200)
    cfg = load_config("tiny", OVERRIDES + [f"data.corpus={corpus}"])
    train(cfg, root / "run", devices=jax.devices()[:1], progress=False, stats=training_stats(cfg))
    return root


def test_probe_cli_writes_schema_and_plots(trained, capsys):
    out = trained / "out"
    assert main(["probe", "--workdir", str(trained / "run"), "--out", str(out), "--seq-len", "32",
                 "--num-sequences", "8", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    r = json.loads((out / "probe.json").read_text())
    for key in ("spike_top1", "sink_ratio", "sink1_gu", "spike_channels", "step_up_blocks", "step_down_blocks",
                "vocab_spike_fraction", "blocks", "heads", "interventions", "near_constancy", "mechanism"):
        assert key in r, key
    assert len(r["blocks"]) == 4 and [b["kind"] for b in r["blocks"]] == ["attn", "ffn", "attn", "ffn"]
    for b in r["blocks"]:
        assert set(b) >= {"index", "kind", "residual_top3", "residual_median", "output_top3", "argmax_position",
                          "argmax_channel"}
        assert b["residual_top3"][0] >= b["residual_top3"][1] >= b["residual_top3"][2] >= b["residual_median"]
    assert len(r["heads"]) == 2 and len(r["heads"][0]) == 4
    assert set(r["heads"][0][0]) >= {"first_token_mass", "is_sink", "mean_distance"}
    assert 0 <= r["vocab_spike_fraction"]["position_0"] <= 1 and 0 <= r["sink_ratio"] <= 1
    assert r["spike_top1"] == pytest.approx(max(b["residual_top3"][0] for b in r["blocks"]), rel=0.5)
    for name in ("life_cycle.png", "sink_heads.png", "attention_maps.png", "activations_3d.png", "silu.png",
                 "uk_norms.png"):
        assert (out / name).stat().st_size > 1000, name
    assert printed["sink_ratio"] == r["sink_ratio"]


def test_blockwise_attention_statistics_equal_dense(trained, monkeypatch):
    model = load_trained(trained / "run")
    seqs = np.asarray(np.random.default_rng(0).integers(0, 256, size=(4, 40)), np.int32)
    opts = pipeline.ProbeOptions(seq_len=40, batch_size=4)
    crit = stats.SpikeCriterion.relative()
    dense = pipeline.block_statistics(model, seqs, opts, crit)["heads"]
    monkeypatch.setattr(passes, "DENSE_LIMIT", 8)
    monkeypatch.setattr(passes, "QUERY_BLOCK", 16)          # 40 = 16 + 16 + a partial block
    blocked = pipeline.block_statistics(model, seqs, opts, crit)["heads"]
    for block in dense:
        for key in dense[block]:
            np.testing.assert_allclose(blocked[block][key], dense[block][key], rtol=1e-5, atol=1e-6)


def test_training_time_statistics_logged_from_step_zero(trained):
    rows = [r for r in read_metrics(trained / "run" / "metrics.jsonl") if "sink_ratio" in r]
    assert [r["step"] for r in rows] == [0, 10]
    for r in rows:
        assert len(r["spike/top1"]) == 4 and len(r["first_token_mass"]) == 2
        assert r["spike"] == pytest.approx(max(r["spike/top1"]), rel=0.5)
        assert 0 <= r["sink_ratio"] <= 1 and 0 <= r["spike/pos0_share"] <= 1


def test_probe_of_a_missing_workdir_is_one_line(tmp_path, capsys):
    assert main(["probe", "--workdir", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a jaxsink workdir" in err[0]


def test_training_statistics_of_a_sigmoid_model_use_proxy_scores():
    """A fresh sigmoid-attention model (weights about sigmoid(0) = 0.5 everywhere): the logged sink ratio
    and first-token mass are those of the row-normalised (proxy) scores, computed here in NumPy."""
    import jax.numpy as jnp

    from jaxsink.model import ModelSpec, build, collect, forward
    cfg = load_config("tiny", [*OVERRIDES, "model.attention=sigmoid"])
    capture, stats_fn = training_stats(cfg)
    model = build(ModelSpec.from_config(cfg.model, 264))
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 264, size=(4, 32)), jnp.int32)
    _, inter = forward(model, tokens, capture=capture)
    got = stats_fn(inter)
    _, raw = forward(model, tokens, capture=("attn_probs",))
    t = cfg.stats.sink_seq_len
    masses = []
    for probs in collect(raw, 4)["attn_probs"].values():
        p = np.asarray(probs, np.float64)[:, :, :t, :t]
        proxy = p / p.sum(-1, keepdims=True)
        masses.append(proxy[..., 0].mean(-1).mean())
        assert p[..., 1:, 0].mean() > 0.3                          # read raw, every head would be a sink
    np.testing.assert_allclose(np.asarray(got["first_token_mass"]), masses, rtol=1e-4)
    assert float(got["sink_ratio"]) == 0.0
