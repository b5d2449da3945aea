"""`jaxsink probe`: the paper's analyses of one model (trained here or imported) on real text.

Pipeline: text -> non-overlapping chunks of `seq_len` tokens drawn at random, seeded (BOS prepended when asked) ->
pass 1 (per-block magnitudes, massive-activation masks, per-head sink statistics, position-0 vectors) ->
spike channels / token, step-up and step-down blocks -> pass 2 (spike-channel values per block for the
life cycle, SiLU near-identity) -> every rise-fall cycle -> weight analysis (||U_k||_F, S_k spectra at step-up
and step-down blocks, affine W_VO and its alignment with s*) -> vocabulary probe -> near-constancy and sink
keys over the spike tokens -> interventions -> `OUT/probe.json` (schema in `docs/probe.md`) and PNG plots.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsink.model import ModelSpec, apply, collect
from jaxsink.probe import interventions_sun as sun
from jaxsink.probe import plots, stats
from jaxsink.probe.sampling import sample_windows
from jaxsink.probe.spike_token_pass import spike_token_statistics
from jaxsink.probe.mechanism_pass import trigger_analysis
from jaxsink.stats.spike_tokens import life_cycles
from jaxsink.stats.trigger import channels_by_magnitude
from jaxsink.stats.per_sequence import per_sequence
from jaxsink.stats.sink_validity import sink_ratio_defined

log = logging.getLogger("jaxsink")
DENSE_LIMIT = 1024        # longer sequences get their attention statistics in query blocks
QUERY_BLOCK = 256


@dataclasses.dataclass
class Probed:
    """Anything the probe can analyse: the one jaxsink model plus its tokenizer."""
    graphdef: object
    params: dict
    spec: ModelSpec
    tokenizer: object
    bos: bool          # whether the model's sequences start with BOS (its tokenizer's convention)
    source: str

    @classmethod
    def from_workdir(cls, workdir) -> "Probed":
        from jaxsink.train.run import Run, load_workdir_config
        run = Run.create(load_workdir_config(workdir), workdir, devices=jax.devices()[:1])
        params, step = run.restore_params()
        return cls(run.graphdef, params, run.spec, run.tokenizer, True, f"{workdir} (step {step})")


@dataclasses.dataclass
class ProbeOptions:
    seq_len: int = 64
    num_sequences: int = 64
    batch_size: int = 16
    bos: bool | None = None          # None: the model's convention
    sink_eps: float = 0.3
    criterion: str = "auto"          # sun | relative | auto (sun if it flags anything, else relative)
    vocab: bool = True
    vocab_position: int = 16
    vocab_sample: int = 1024         # ids probed (evenly spaced); 0 = the whole vocabulary
    interventions: bool = True
    sample: str = "random"           # random (seeded, over the whole text) | consecutive (the first chunks)
    sample_seed: int = 0
    plots: bool = True
    progress: bool = True


def sequences(tokenizer, text: str, seq_len: int, num: int, bos: bool) -> np.ndarray:
    """Consecutive non-overlapping chunks; with BOS each chunk holds seq_len-1 text tokens after BOS."""
    from jaxsink.data import DataError
    ids = np.asarray(tokenizer.encode(text), np.int32)
    body = seq_len - 1 if bos else seq_len
    n = min(len(ids) // body, num)
    if n == 0:
        raise DataError(f"probe text has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    chunks = ids[: n * body].reshape(n, body)
    if bos:
        chunks = np.concatenate([np.full((n, 1), tokenizer.bos_id, np.int32), chunks], axis=1)
    return chunks


# ------------------------------------------------------------------ forward passes (jitted per batch)

def _attention_blocks(spec: ModelSpec) -> list[int]:
    """1-based indices of blocks whose mixer is attention (every odd block; every block if ffn=attention)."""
    return [i for i in range(1, spec.n_blocks + 1) if i % 2 == 1 or spec.ffn == "attention"]


def _pass1(model: Probed, opts: ProbeOptions, criterion: stats.SpikeCriterion):
    spec = model.spec
    dense = opts.seq_len <= DENSE_LIMIT
    capture = ("residual", "block_out", "normed_input", "attn_probs" if dense else "qkv")

    @jax.jit
    def run(params, tokens):
        logits, inter = apply(model.graphdef, params, tokens, capture)
        c = collect(inter, spec.n_blocks)
        out = {"nll": _nll(logits, tokens), "blocks": {}, "heads": {}}
        for i in range(1, spec.n_blocks + 1):
            r, o = c.get("residual_pre_norm", c["residual"]).get(i, c["residual"][i]), c["block_out"][i]
            mask = stats.massive_mask(r, criterion)
            out["blocks"][i] = {"residual": stats.magnitude_stats(r), "output": stats.magnitude_stats(o),
                                "token_mask": mask.any(-1), "channel_mask": mask.any(1),
                                "channel_absmax": jnp.max(jnp.abs(r.astype(jnp.float32)), axis=(0, 1))[None],
                                "pos0": r[:, 0].astype(jnp.float32),
                                "normed_pos0": c["normed_input"][i][:, 0].astype(jnp.float32)}
        for i in _attention_blocks(spec):
            if dense:
                out["heads"][i] = stats.head_stats(stats.sink_view(c["attn_probs"][i], spec.attention), opts.sink_eps)
            else:
                out["heads"][i] = _blockwise(_attention_module(params, model, i), c, i, opts)
        return out
    return run


def _blockwise(attn, c, i, opts):
    q, k = c["q"][i], c["k"][i]
    kind = attn.spec.attention
    return stats.head_stats_blockwise(lambda start, size: stats.sink_view(attn.query_block_probs(q, k, start, size),
                                                                          kind),
                                      opts.seq_len, block=QUERY_BLOCK, eps=opts.sink_eps)


def _attention_module(params, model, block):
    merged = nnx.merge(model.graphdef, nnx.State(params))
    return merged.blocks[block - 1].mixer


def _nll(logits, tokens):
    """Next-token NLL per sequence over positions 0..T-2 (targets are the chunk's own next tokens)."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0], axis=-1)


def _batches(seqs, size):
    for s in range(0, len(seqs), size):
        yield seqs[s:s + size]


def _gather(results):
    """Concatenate per-batch result trees along the batch axis (numpy)."""
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=0), *results)


# ------------------------------------------------------------------ the probe

def probe(model: Probed, text: str, out_dir, opts: ProbeOptions = ProbeOptions()) -> dict:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    bos = model.bos if opts.bos is None else opts.bos
    sample = sample_windows(model.tokenizer.encode(text), opts.seq_len, opts.num_sequences, bos,
                            model.tokenizer.bos_id, seed=opts.sample_seed, method=opts.sample)
    seqs = sample.tokens
    spec = model.spec
    bar = _bar(opts.progress, 6)
    criterion, p1 = _choose_criterion(model, seqs, opts)
    bar.update(1)
    blocks = _block_table(p1, spec)
    spike = _spike_summary(p1, spec, blocks)
    heads = _head_table(p1, spec)
    result = {
        "source": model.source, "model": dataclasses.asdict(spec), "seq_len": opts.seq_len,
        "num_sequences": int(len(seqs)), "sample": sample.record(), "bos": bos, "sink_eps": opts.sink_eps,
        "criterion": dataclasses.asdict(criterion),
        "loss": float(np.mean(p1["nll"])),
        "spike_top1": stats.spike_top1([p1["blocks"][i]["residual"]["top3"][:, 0] for i in range(1, spec.n_blocks + 1)]),
        **spike,
        "sink_ratio": float(np.mean([h["is_sink"] for h in p1["heads"].values()])) if p1["heads"] else 0.0,
        "sink1_gu": float(np.mean([h["gu_alpha1"] > opts.sink_eps for h in p1["heads"].values()]))
        if p1["heads"] else 0.0,
        "blocks": blocks, "heads": heads,
        "per_sequence": per_sequence(p1, spec.n_blocks, spike["spike_peak_block"], opts.sink_eps),
        "sink_ratio_defined": sink_ratio_defined(opts.seq_len, opts.sink_eps),
    }
    bar.update(1)
    result["life_cycle_values"], result["silu"], result["sink_keys"] = _pass2(model, seqs, opts, result)
    up, down = stats.life_cycle_blocks(result["life_cycle_values"]["residual"], result["life_cycle_values"]["output"]) \
        if result["spike_channels"] else ([], [])
    result["step_up_blocks"], result["step_down_blocks"] = up, down
    result["life_cycles"] = life_cycles(result["life_cycle_values"]["residual"],
                                        result["life_cycle_values"]["output"]) if result["spike_channels"] else []
    bar.update(1)
    result["mechanism"] = {**_mechanism(model, result), **trigger_analysis(model, result, p1)}
    bar.update(1)
    if opts.vocab:
        result["vocab_spike_fraction"] = vocab_probe(model, seqs, criterion, opts)
    result["near_constancy"] = spike_token_statistics(
        model, seqs, result, p1, opts, result.get("vocab_spike_fraction", {}).pop("position_0_ids", ()))
    result["sink_keys"] = {"spike_tokens": (result["near_constancy"]["spike_tokens"] or {}).get("sink_keys"),
                           "pos0_trivial_under_bos": result["sink_keys"]}
    bar.update(1)
    if opts.interventions:
        result["interventions"] = interventions(model, seqs, result, p1, opts)
    bar.update(1)
    bar.close()
    result["wall_seconds"] = time.perf_counter() - t_start
    if opts.plots:
        result["plots"] = _plots(model, seqs, result, out_dir)
    (out_dir / "probe.json").write_text(json.dumps(json_safe(result), indent=1))
    return result


def _bar(enabled, total):
    from tqdm import tqdm
    return tqdm(total=total, desc="probe", disable=not enabled, unit="stage")


def _run_pass1(model, seqs, opts, criterion):
    run = _pass1(model, opts, criterion)
    return _gather([jax.device_get(run(model.params, jnp.asarray(b))) for b in _batches(seqs, opts.batch_size)])


def _choose_criterion(model, seqs, opts):
    sun = stats.SpikeCriterion()
    if opts.criterion == "relative":
        crit = stats.SpikeCriterion.relative()
        return crit, _run_pass1(model, seqs, opts, crit)
    p1 = _run_pass1(model, seqs, opts, sun)
    flagged = any(b["token_mask"].any() for b in p1["blocks"].values())
    if opts.criterion == "sun" or flagged:
        return sun, p1
    crit = stats.SpikeCriterion.relative()
    return crit, _run_pass1(model, seqs, opts, crit)


def _block_table(p1, spec) -> list[dict]:
    rows = []
    for i in range(1, spec.n_blocks + 1):
        b = p1["blocks"][i]
        rows.append({"index": i, "kind": "attn" if i in _attention_blocks(spec) else "ffn",
                     "residual_top3": b["residual"]["top3"].mean(0).tolist(),
                     "residual_median": float(b["residual"]["median"].mean()),
                     "output_top3": b["output"]["top3"].mean(0).tolist(),
                     "output_median": float(b["output"]["median"].mean()),
                     "argmax_position": int(np.bincount(b["residual"]["argmax_position"]).argmax()),
                     "argmax_channel": int(np.bincount(b["residual"]["argmax_channel"]).argmax()),
                     "spike_token_share": float(b["token_mask"].any(1).mean())})
    return rows


def _spike_summary(p1, spec, blocks) -> dict:
    """Spike channels (flagged in any block), spike positions (share of sequences per position), the
    dominant spike position and channel."""
    chan = np.zeros(spec.d_model, int)
    pos_share = None
    for i in range(1, spec.n_blocks + 1):
        b = p1["blocks"][i]
        chan += b["channel_mask"].any(0)
        share = b["token_mask"].mean(0)
        pos_share = share if pos_share is None else np.maximum(pos_share, share)
    channels = [int(c) for c in np.nonzero(chan)[0]]
    absmax = np.max([p1["blocks"][i]["channel_absmax"].max(0) for i in range(1, spec.n_blocks + 1)], axis=0)
    positions = {int(t): float(pos_share[t]) for t in np.nonzero(pos_share)[0]}
    peak = max(blocks, key=lambda r: r["residual_top3"][0])
    return {"spike_channels": channels, "spike_positions": positions,
            "spike_channels_by_magnitude": channels_by_magnitude(channels, absmax[channels], len(channels)),
            "spike_position": peak["argmax_position"], "spike_channel": peak["argmax_channel"],
            "spike_peak_block": peak["index"],
            "spike_top1_over_median": peak["residual_top3"][0] / max(peak["residual_median"], 1e-30),
            "step_up_blocks": [], "step_down_blocks": []}


def _head_table(p1, spec) -> list[list[dict]]:
    table = []
    for i, h in sorted(p1["heads"].items()):
        table.append([{"block": i, "head": j, "first_token_mass": float(h["first_token_mass"][:, j].mean()),
                       "is_sink": float(h["is_sink"][:, j].mean()) > 0.5,
                       "sink_fraction": float(h["is_sink"][:, j].mean()),
                       "mean_distance": float(h["mean_distance"][:, j].mean())} for j in range(spec.n_heads)])
    return table


def _pass2(model, seqs, opts, result):
    """Signed spike-channel values at the spike position per block, SiLU near-identity of FFN gates,
    and effective rank of the keys at the sink position of sink heads."""
    spec = model.spec
    pos, chan = result["spike_position"], result["spike_channel"]
    spike_channels = np.asarray(result["spike_channels_by_magnitude"][:16] or [chan])
    capture = ("residual", "block_out", "ffn_gate", "qkv")

    @jax.jit
    def run(params, tokens):
        _, inter = apply(model.graphdef, params, tokens, capture)
        c = collect(inter, spec.n_blocks)
        out = {"residual": jnp.stack([c["residual"][i][:, pos, chan] for i in range(1, spec.n_blocks + 1)], 1),
               "output": jnp.stack([c["block_out"][i][:, pos, chan] for i in range(1, spec.n_blocks + 1)], 1),
               "channel_values": jnp.stack([c["residual"][i][:, :, spike_channels]
                                            for i in range(1, spec.n_blocks + 1)], 1),   # [B, blocks, T, C]
               "silu": {}, "keys0": {}}
        for i, z in c.get("ffn_gate", {}).items():
            si = stats.silu_identity(z)
            out["silu"][i] = {"cos": si["cos"], "norm_ratio": si["norm_ratio"],
                              "magnitude": jnp.max(jnp.abs(c["block_out"][i]), -1)}
        for i, k in c.get("k", {}).items():
            out["keys0"][i] = k[:, 0]
        return out

    p2 = _gather([jax.device_get(run(model.params, jnp.asarray(b))) for b in _batches(seqs, opts.batch_size)])
    values = {"position": pos, "channel": chan, "residual": p2["residual"].mean(0).tolist(),
              "output": p2["output"].mean(0).tolist(),
              "channels": spike_channels.tolist(), "channel_means": p2["channel_values"].mean(0)}
    silu = {}
    for i, s in p2["silu"].items():
        spike_tok = s["magnitude"][:, pos]
        silu[i] = {"spike_token_cos": float(s["cos"][:, pos].mean()), "spike_token_norm_ratio": float(s["norm_ratio"][:, pos].mean()),
                   "other_cos": float(np.delete(s["cos"], pos, 1).mean()),
                   "other_norm_ratio": float(np.delete(s["norm_ratio"], pos, 1).mean()),
                   "spike_token_output_max": float(spike_tok.mean())}
    keys = {}
    for row in result["heads"]:
        for h in row:
            k0 = p2["keys0"].get(h["block"])
            if h["is_sink"] and k0 is not None:
                g = h["head"] // (spec.n_heads // spec.kv_heads)
                keys[f"{h['block']}/{h['head']}"] = stats.effective_rank(k0[:, g])
    return values, {"per_block": silu, "raw": p2["silu"]}, keys


def _mechanism(model, result) -> dict:
    """||U_k||_F per SwiGLU block (RMSNorm scale folded in), top channels' S_k eigen-structure, W_VO norm."""
    spec = model.spec
    out = {"uk_norm_top": {}, "uk_norm_all": {}}
    if spec.ffn != "swiglu":
        return out
    for i in range(2, spec.n_blocks + 1, 2):
        p = model.params["blocks"][i - 1]
        wg, wu, wd = p["mixer"]["w_gate"], p["mixer"]["w_up"], p["mixer"]["w_down"]
        if "norm_in" in p and "scale" in p["norm_in"] and spec.norm_type == "rmsnorm":
            wg, wu = stats.fold_norm_scale(p["norm_in"]["scale"], wg, wu)
        norms = np.asarray(stats.uk_frobenius(wg, wu, wd))
        out["uk_norm_all"][i] = norms
        top = np.argsort(norms)[::-1][:3]
        out["uk_norm_top"][i] = [{"channel": int(k), "norm": float(norms[k]),
                                  "ratio_to_median": float(norms[k] / max(np.median(norms), 1e-30))} for k in top]
    return out


# ------------------------------------------------------------------ vocabulary probe (paper Table 2)

def vocab_probe(model: Probed, seqs, criterion, opts) -> dict:
    """Fraction of the vocabulary that becomes a spike token at position 0, and at a later position:
    every id v is placed at position 0 of [v, context...] and at position p of [context[:p], v]; v is a
    spike token there if any block's residual at that position is massive (the probe's criterion)."""
    spec = model.spec
    p = min(opts.vocab_position, seqs.shape[1] - 1)
    context = seqs[0, : p + 1]
    vocab = model.tokenizer.vocab_size
    ids_all = np.arange(vocab, dtype=np.int32)
    if opts.vocab_sample and opts.vocab_sample < vocab:     # a CPU cannot run 150k ids through a 7B quickly
        ids_all = np.unique(np.linspace(0, vocab - 1, opts.vocab_sample).astype(np.int32))

    @jax.jit
    def spiky(params, tokens, at):
        _, inter = apply(model.graphdef, params, tokens, ("residual",))
        c = collect(inter, spec.n_blocks)
        flags = [stats.massive_mask(c["residual"][i], criterion)[:, at].any(-1) for i in range(1, spec.n_blocks + 1)]
        return jnp.stack(flags).any(0)

    first, later = [], []
    for start in range(0, len(ids_all), 256):
        ids = ids_all[start:start + 256]
        at0 = np.concatenate([ids[:, None], np.tile(context[1:p + 1], (len(ids), 1))], axis=1)
        atp = np.concatenate([np.tile(context[:p], (len(ids), 1)), ids[:, None]], axis=1)
        first.append(np.asarray(spiky(model.params, jnp.asarray(at0), 0)))
        later.append(np.asarray(spiky(model.params, jnp.asarray(atp), p)))
    first, later = np.concatenate(first), np.concatenate(later)
    return {"position_0": float(first.mean()), f"position_{p}": float(later.mean()), "vocab_size": int(vocab),
            "ids_probed": int(len(ids_all)), "later_position": p, "position_0_ids": ids_all[first].tolist()}


# ------------------------------------------------------------------ interventions

def interventions(model: Probed, seqs, result, p1, opts) -> dict:
    """Loss changes under Sun et al.'s zero/mean ablation of each sequence's own spike tokens at the step-up
    block, hiding each sink head's sink key (vs a matched random-head control), and StreamingLLM window
    attention with and without the first tokens kept (`jaxsink.probe.interventions_sun`)."""
    spec = model.spec
    graphdef = model.graphdef

    @functools.partial(jax.jit, static_argnames=("window",))
    def loss_fn(params, tokens, edits, window=()):
        edits = {**edits, "attention": {**edits.get("attention", {}), **dict(window)}}
        logits, _ = apply(graphdef, params, tokens, (), edits)
        return _nll(logits, tokens)

    def loss(edits, per_sequence=None):
        attention = dict(edits.get("attention", {}))
        window = tuple((k, attention.pop(k)) for k in ("window", "keep_first") if k in attention)
        out = []
        for s in range(0, len(seqs), opts.batch_size):
            e = {**edits, "attention": attention, **(per_sequence(slice(s, s + opts.batch_size)) if per_sequence else {})}
            out.append(np.asarray(loss_fn(model.params, jnp.asarray(seqs[s:s + opts.batch_size]), e, window=window)))
        return float(np.mean(np.concatenate(out)))

    out = {"baseline": loss({})}
    channels = result["life_cycle_values"]["channels"] if result["spike_channels"] else []
    blocks = result["step_up_blocks"] or ([result["spike_peak_block"]] if len(channels) else [])
    if len(channels) and blocks:
        b0 = blocks[-1]
        flags = p1["blocks"][b0]["token_mask"]
        values = _capture_all(model, seqs, "residual", b0, opts)[:, :, channels]
        mask, mean = sun.sun_ablation(flags, values, channels, spec.d_model)
        out["spike_channels_zero"] = loss({}, lambda sl: {"residual_edits": {b0: (mask[sl], 0.0)}})
        out["spike_channels_mean"] = loss({}, lambda sl: {"residual_edits": {b0: (mask[sl], mean)}})
        out["spike_edit"] = {"block": b0, "edited_tokens": int(flags.sum()), "channels": len(channels),
                             "mean_shift": float(np.abs(values[flags] - mean[channels]).mean() /
                                                 max(np.abs(values[flags]).mean(), 1e-30)) if flags.any() else 0.0}
    sink_heads = {row[0]["block"]: np.array([h["is_sink"] for h in row]) for row in result["heads"]}
    n_sink = int(sum(m.sum() for m in sink_heads.values()))
    if n_sink:
        keys = {i: sun.sink_keys(h["alpha_first_half"].mean(0)) for i, h in p1["heads"].items()}
        out["mask_sink_heads"] = loss({"attention": {"drop_key": sun.drop_keys(sink_heads, keys)}})
        rng = np.random.default_rng(0)
        controls = [sun.matched_control(sink_heads, rng) for _ in range(sun.CONTROL_DRAWS)]
        out["mask_random_heads"] = float(np.mean([loss({"attention": {"drop_key": sun.drop_keys(c, keys)}})
                                                  for c in controls]))
        out["masked_heads"] = n_sink
        out["control"] = {"heads": n_sink, "draws": sun.CONTROL_DRAWS, "from": "all heads, without replacement",
                          "key": "each head's argmax of alpha over k < T/2"}
    window = max(seqs.shape[1] // 4, 2)
    for keep in (0, 1, 4):
        out[f"window_{window}_keep_{keep}"] = loss({"attention": {"window": window, "keep_first": keep}})
    return out


def _capture_all(model, seqs, name, block, opts):
    """One captured intermediate of one block for every sequence, [N, ...] (float32 NumPy)."""
    @jax.jit
    def run(params, tokens):
        _, inter = apply(model.graphdef, params, tokens, (name,))
        return collect(inter, model.spec.n_blocks)[name][block].astype(jnp.float32)
    return np.concatenate([np.asarray(run(model.params, jnp.asarray(b))) for b in _batches(seqs, opts.batch_size)])


# ------------------------------------------------------------------ plots and JSON

def _plots(model, seqs, result, out_dir) -> list[str]:
    spec = model.spec
    files = [plots.life_cycle(result["blocks"], out_dir / "life_cycle.png", title=result["source"])]
    rows = result["heads"]
    if rows:
        mass = np.array([[h["first_token_mass"] for h in row] for row in rows])
        flags = np.array([[h["is_sink"] for h in row] for row in rows])
        files.append(plots.head_heatmap(mass, out_dir / "sink_heads.png",
                                        f"first-token attention mass; sink ratio {result['sink_ratio']:.3f}",
                                        "alpha_1", flags))
        files.append(_attention_map_plot(model, seqs, rows, out_dir))
    peak = result["spike_peak_block"]
    h = _capture_one(model, seqs[:1], "residual")[peak][0]
    files.append(plots.activations_3d(h, out_dir / "activations_3d.png", f"|h| after block {peak}",
                                      max_channels=min(spec.d_model, 64)))
    raw = result["silu"].pop("raw", {})
    if raw:
        i = (result["step_up_blocks"] or [2])[0]
        i = i if i in raw else sorted(raw)[0]
        files.append(plots.silu_scatter(raw[i]["cos"].ravel(), raw[i]["norm_ratio"].ravel(),
                                        raw[i]["magnitude"].ravel(), out_dir / "silu.png", f"FFN block {i}"))
    if result["mechanism"]["uk_norm_all"]:
        files.append(plots.uk_norms(result["mechanism"]["uk_norm_all"], out_dir / "uk_norms.png"))
    return [str(pathlib.Path(f).name) for f in files]


def _attention_map_plot(model, seqs, rows, out_dir):
    heads = sorted((h for row in rows for h in row), key=lambda h: -h["first_token_mass"])
    chosen = heads[:2] + heads[-1:]
    probs = _capture_one(model, seqs[:1], "attn_probs")
    maps = [(f"block {h['block']} head {h['head']} (alpha_1 {h['first_token_mass']:.2f})",
             stats.sink_view(probs[h["block"]][0, h["head"]], model.spec.attention)) for h in chosen]
    return plots.attention_maps(maps, out_dir / "attention_maps.png")


def _capture_one(model, tokens, name):
    _, inter = apply(model.graphdef, model.params, jnp.asarray(tokens), (name,))
    return {k: np.asarray(v) for k, v in collect(inter, model.spec.n_blocks)[name].items()}


def json_safe(x):
    """JSON-safe: numpy to Python, int dict keys to strings, NaN to None."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items() if k != "uk_norm_all"}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return json_safe(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def probe_workdir_summary(workdir, **kw) -> dict:
    """What a sweep row needs: the probe of a trained workdir on its held-out text at T = 64."""
    model = Probed.from_workdir(workdir)
    from jaxsink.train.run import load_data, load_workdir_config
    cfg = load_workdir_config(workdir)
    _, splits = load_data(cfg, pathlib.Path(workdir))
    text = model.tokenizer.decode(splits.heldout)
    kw.setdefault("seq_len", min(64, cfg.train.seq_len))     # probed where it was trained (Table 8's short rows)
    opts = ProbeOptions(vocab=False, interventions=False, progress=False, **kw)
    r = probe(model, text, pathlib.Path(workdir) / "probe", opts)
    return json_safe({"sink_ratio": r["sink_ratio"], "spike": r["spike_top1"], "sink1_gu": r["sink1_gu"],
            "spike_top1_over_median": r["spike_top1_over_median"], "spike_position": r["spike_position"],
            "first_token_mass": [float(np.mean([h["first_token_mass"] for h in row])) for row in r["heads"]],
            "per_sequence": r["per_sequence"], "sample": r["sample"], "probe_seq_len": r["seq_len"],
            "sink_ratio_defined": r["sink_ratio_defined"],
            "life_cycle": [{k: b[k] for k in ("index", "residual_top3", "residual_median")} for b in r["blocks"]]})
