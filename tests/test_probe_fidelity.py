"""The probe's analyses as the pipeline runs them, on a planted BOS model whose spike tokens vary (review P1.1-
P1.3): near-constancy and sink-key rank over the real spike tokens, Sun et al.'s mean ablation against a
NumPy loop, the matched random-head control, each sink head's own sink key."""
import json

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxsink.data.tokenizer import ByteTokenizer
from jaxsink.model import ModelSpec, apply, build, collect, split
from jaxsink.model.attention import attention_probs
from jaxsink.model.interventions import Interventions, ResidualEdit
from jaxsink.model.loaded import LoadedModel
from jaxsink.probe import analyses, passes, pipeline
from jaxsink.probe import interventions_sun as sun
from jaxsink.probe.sampling import sample_windows

SPIKE = {256: 0, ord("a"): 5, ord("b"): 9}      # BOS and two letters, each massive in its own channel


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    spec = ModelSpec(vocab_size=257, n_layers=2, d_model=32, n_heads=4, d_head=8, d_ff=64, max_seq_len=64)
    graphdef, params = split(build(spec, 0))
    embed = np.array(params["embed"])
    for token, channel in SPIKE.items():
        embed[token, channel] = 400.0
    params["embed"] = jnp.asarray(embed)
    model = LoadedModel(graphdef, params, spec, ByteTokenizer(), True, "planted")
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefghij klmnop"), size=4000))
    opts = pipeline.ProbeOptions(seq_len=32, num_sequences=12, batch_size=6, criterion="relative", sink_eps=0.01,
                               vocab_sample=64, vocab_position=8, plots=False, progress=False)
    out = tmp_path_factory.mktemp("planted")
    result = pipeline.probe(model, text, out, opts)
    return model, text, opts, result, out


def test_near_constancy_over_varying_spike_tokens_is_not_one(planted):
    _, _, _, r, _ = planted
    nc = r.near_constancy
    tokens = nc.spike_tokens
    assert nc.pos0_trivial and nc.pos0_cosine_per_block[1] == pytest.approx(1.0, abs=1e-5)   # BOS: by construction
    assert len(tokens.positions) > 2 and tokens.prompts > 1                  # position 0 and the planted letters
    assert max(tokens.cosine_per_block.values()) < 0.8                       # three orthogonal spike directions
    vocab = nc.vocab_position_0
    assert vocab is not None and vocab.pairs == len(vocab.ids) >= 2


def test_sink_key_rank_over_spike_tokens_is_not_one(planted):
    _, _, _, r, _ = planted
    ranks = r.sink_keys.spike_tokens
    assert ranks and all(v.rank > 1 and v.participation_ratio > 1.2 for v in ranks.values())
    old = r.sink_keys.pos0_trivial_under_bos                                    # the first version's statistic
    assert old and all(v.rank == 1 for v in old.values())


def sun_reference(h, criterion_factor, channels):
    """Sun et al.'s mean ablation by loops: per sequence its own massive tokens, mean over all of them."""
    n_seq, t_len, d = h.shape
    flagged = []
    for n in range(n_seq):
        med = np.median(np.abs(h[n]))
        for t in range(t_len):
            if any(abs(h[n, t, c]) > criterion_factor * med for c in range(d)):
                flagged.append((n, t))
    mean = {c: np.mean([h[n, t, c] for n, t in flagged]) for c in channels}
    edited = h.copy()
    for n, t in flagged:
        for c in channels:
            edited[n, t, c] = mean[c]
    return flagged, edited


def test_mean_ablation_equals_a_numpy_loop(planted):
    model, text, opts, r, _ = planted
    seqs = sample_windows(model.tokenizer.encode(text), opts.seq_len, opts.num_sequences, True,
                          model.tokenizer.bos_id).tokens
    edit = r.interventions.spike_edit
    b0, channels = edit.block, r.life_cycle_values.channels
    _, inter = apply(model.graphdef, model.params, jnp.asarray(seqs), ("residual",))
    h = np.asarray(collect(inter, model.spec.n_blocks)["residual"][b0], np.float64)
    flagged, edited = sun_reference(h, 20.0, channels)
    assert edit.edited_tokens == len(flagged) and len({t for _, t in flagged}) > 1

    def nll(x):   # finish the forward from block b0 with the edited residual, by the model's own edit hook
        mask = np.abs(edited - h) > 0
        logits, _ = apply(model.graphdef, model.params, jnp.asarray(seqs),
                          (), Interventions(residual_edits=(ResidualEdit(b0, mask, jnp.asarray(edited, jnp.float32)),)))
        return float(np.mean(passes.next_token_nll(logits, jnp.asarray(seqs))))
    assert r.interventions.spike_channels_mean == pytest.approx(nll(edited), rel=1e-4)


def test_sun_ablation_masks_only_each_sequences_own_tokens():
    rng = np.random.default_rng(1)
    flags = rng.random((5, 7)) < 0.2
    flags[:, 0] = True
    values = rng.normal(size=(5, 7, 2))
    mask, mean = sun.sun_ablation(flags, values, [3, 1], 6)
    for n in range(5):
        for t in range(7):
            assert list(mask[n, t]) == [False, bool(flags[n, t]), False, bool(flags[n, t]), False, False]
    expect = [np.mean([values[n, t, i] for n in range(5) for t in range(7) if flags[n, t]]) for i in range(2)]
    assert mean[3] == pytest.approx(expect[0], rel=1e-6) and mean[1] == pytest.approx(expect[1], rel=1e-6)


def test_matched_control_has_the_sink_count_and_draws_from_all_heads():
    sinks = {1: np.array([True, True, True, False]), 3: np.array([True, True, True, True])}   # 7 of 8
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = sun.matched_control(sinks, rng)
        assert sum(m.sum() for m in c.values()) == 7               # the first version could mask only 1
    assert sun.sink_keys(np.array([[0.1, 0.5, 0.2], [0.9, 0.0, 0.0]])).tolist() == [1, 0]


def test_drop_key_hides_each_heads_own_key():
    rng = np.random.default_rng(2)
    q, k = jnp.asarray(rng.normal(size=(1, 6, 3, 4))), jnp.asarray(rng.normal(size=(1, 6, 3, 4)))
    pos = jnp.arange(6)
    keys = np.array([2, -1, 0])
    p = np.asarray(attention_probs(q, k, kind="softmax", q_pos=pos, k_pos=pos, drop_key=keys)[0])[0]
    base = np.asarray(attention_probs(q, k, kind="softmax", q_pos=pos, k_pos=pos)[0])[0]
    for h, key in enumerate(keys):
        for t in range(6):
            if key >= 0 and t > key:
                assert p[h, t, key] == 0
                ref = np.delete(base[h, t, : t + 1], key)
                np.testing.assert_allclose(np.delete(p[h, t, : t + 1], key), ref / ref.sum(), rtol=1e-5)
            else:
                np.testing.assert_allclose(p[h, t], base[h, t], rtol=1e-6)


def test_gather_at_reads_each_pair(planted):
    from jaxsink.probe.spike_token_pass import gather_at
    model, text, opts, _, _ = planted
    seqs = sample_windows(model.tokenizer.encode(text), 32, 12, True, model.tokenizer.bos_id).tokens
    n, t = np.array([5, 0, 5, 11, 2]), np.array([3, 0, 31, 7, 1])
    g = gather_at(model, seqs, n, t, batch_size=4)
    _, inter = apply(model.graphdef, model.params, jnp.asarray(seqs), ("residual", "qkv"))
    c = collect(inter, model.spec.n_blocks)
    np.testing.assert_allclose(g["residual"][2], np.asarray(c["residual"][2])[n, t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g["k"][3], np.asarray(c["k"][3])[n, t], rtol=1e-5, atol=1e-5)


def test_vocabulary_probe_finds_the_planted_ids(planted):
    """Exactly the planted ids (BOS, 'a', 'b') carry a massive activation at position 0 and at position p."""
    model, text, opts, r, _ = planted
    seqs = sample_windows(model.tokenizer.encode(text), 32, 12, True, model.tokenizer.bos_id).tokens
    v = analyses.vocab_probe(model, seqs, r.criterion, position=8, sample=0)
    assert sorted(v.position_0_ids) == sorted(SPIKE) and v.ids_probed == 257
    assert v.position_0 == pytest.approx(3 / 257) and v.later == pytest.approx(3 / 257) and v.later_position == 8


def test_spike_summary_names_the_planted_channels(planted):
    r = planted[3]
    assert set(SPIKE.values()) <= set(r.spike_channels)
    assert set(r.spike_channels_by_magnitude[:3]) == set(SPIKE.values())
    assert r.spike_positions[0] == 1.0 and r.sample.windows == 12 and r.sample.method == "random"


def test_probe_json_round_trips_every_new_record(planted):
    """probe.json is ProbeResult.to_json(); from_json rebuilds the typed records (sample, life cycles,
    near-constancy sets, sink keys, eigen spectra, W_VO, the spike edit and the control) without loss."""
    r, out = planted[3], planted[4]
    on_disk = json.loads((out / "probe.json").read_text())
    assert on_disk == json.loads(json.dumps(r.to_json()))
    again = pipeline.ProbeResult.from_json(on_disk)
    assert json.loads(json.dumps(again.to_json())) == on_disk
    assert again.near_constancy.spike_tokens.sink_keys == r.near_constancy.spike_tokens.sink_keys
    assert on_disk["interventions"]["control"]["heads"] == on_disk["interventions"]["masked_heads"] > 0
    assert "position_0_ids" not in on_disk["vocab_spike_fraction"] and on_disk["sample"]["seed"] == 0
    assert set(on_disk["per_sequence"]) >= {"spike", "sink_ratio", "perplexity"}
    assert on_disk["sink_ratio_defined"] is False             # eps 0.01 < H_32 / 32 = 0.13: uniform passes it
