"""The probe's analyses: host-side reductions of the passes' outputs into the typed parts of a `ProbeResult`.

`block_stats` below is the gathered output of `passes.block_pass`: {"nll" [N], "blocks": {i: ...},
"heads": {i: head_stats}} over all N sequences.
"""
from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
import numpy as np

from jaxsink import stats
from jaxsink.model.interventions import FirstKeyMask, Interventions, ResidualEdit
from jaxsink.model.loaded import LoadedModel
from jaxsink.model.spec import ModelSpec
from jaxsink.probe import passes
from jaxsink.probe.result import (BlockRow, Eigen, HeadRow, InterventionLosses, LifeCycleValues, Mechanism,
                                  NearConstancy, Silu, SiluBlock, SinkKeyRank, UkChannel, VocabSpikeFraction)


class SpikeLocation(typing.NamedTuple):
    """Where the spike is: channels flagged in any block, the share of sequences flagged per position, and
    the (position, channel, block) of the largest mean top-1 |h|."""
    channels: list[int]
    positions: dict[int, float]
    position: int
    channel: int
    peak_block: int
    top1_over_median: float


def block_table(block_stats: dict, spec: ModelSpec) -> list[BlockRow]:
    rows = []
    for i in range(1, spec.n_blocks + 1):
        b = block_stats["blocks"][i]
        rows.append(BlockRow(
            index=i, kind="attn" if spec.is_attention_block(i) else "ffn",
            residual_top3=b["residual"]["top3"].mean(0).tolist(),
            residual_median=float(b["residual"]["median"].mean()),
            output_top3=b["output"]["top3"].mean(0).tolist(), output_median=float(b["output"]["median"].mean()),
            argmax_position=int(np.bincount(b["residual"]["argmax_position"]).argmax()),
            argmax_channel=int(np.bincount(b["residual"]["argmax_channel"]).argmax()),
            spike_token_share=float(b["token_mask"].any(1).mean())))
    return rows


def spike_location(block_stats: dict, spec: ModelSpec, blocks: list[BlockRow]) -> SpikeLocation:
    channel_hits = np.zeros(spec.d_model, int)
    position_share = None
    for i in range(1, spec.n_blocks + 1):
        b = block_stats["blocks"][i]
        channel_hits += b["channel_mask"].any(0)
        share = b["token_mask"].mean(0)
        position_share = share if position_share is None else np.maximum(position_share, share)
    peak = max(blocks, key=lambda r: r.residual_top3[0])
    return SpikeLocation(
        channels=[int(c) for c in np.nonzero(channel_hits)[0]],
        positions={int(t): float(position_share[t]) for t in np.nonzero(position_share)[0]},
        position=peak.argmax_position, channel=peak.argmax_channel, peak_block=peak.index,
        top1_over_median=peak.residual_top3[0] / max(peak.residual_median, 1e-30))


def spike_top1(block_stats: dict, spec: ModelSpec) -> float:
    return float(stats.spike_top1([block_stats["blocks"][i]["residual"]["top3"][:, 0]
                                   for i in range(1, spec.n_blocks + 1)]))


def sink_ratios(block_stats: dict, eps: float) -> tuple[float, float]:
    """(the paper's sink ratio, Eq. 28; Gu et al.'s Sink_1: share of heads with alpha_1 > eps)."""
    heads = block_stats["heads"].values()
    if not heads:
        return 0.0, 0.0
    return (float(np.mean([h["is_sink"] for h in heads])),
            float(np.mean([h["first_token_mass"] > eps for h in heads])))


def head_table(block_stats: dict, spec: ModelSpec) -> list[list[HeadRow]]:
    table = []
    for i, h in sorted(block_stats["heads"].items()):
        table.append([HeadRow(block=i, head=j, first_token_mass=float(h["first_token_mass"][:, j].mean()),
                              is_sink=float(h["is_sink"][:, j].mean()) > 0.5,
                              sink_fraction=float(h["is_sink"][:, j].mean()),
                              mean_distance=float(h["mean_distance"][:, j].mean())) for j in range(spec.n_heads)])
    return table


def near_constancy(block_stats: dict, spec: ModelSpec, step_up: list[int]) -> NearConstancy:
    """Mean pairwise cosine of h at position 0 across prompts, per block (Fig. 5; RMSNorm only rescales each
    vector, so this is the cosine of RMSNorm(h)), and the multi-hotness of h there (scale-free, Eq. 24)."""
    blocks = range(1, spec.n_blocks + 1)
    cos = {i: float(stats.mean_pairwise_cosine(block_stats["blocks"][i]["pos0"])) for i in blocks}
    first = step_up[0] if step_up else None
    hot = {i: jax.tree.map(lambda x: float(np.mean(x)), stats.multi_hotness(block_stats["blocks"][i]["pos0"]))
           for i in blocks}
    return NearConstancy(pos0_cosine_per_block=cos,
                         before_step_up=cos.get(first - 1) if first and first > 1 else None,
                         after_step_up=cos.get(first) if first else None, pos0_multi_hotness_per_block=hot)


# ------------------------------------------------------------------ the spike channels through the blocks

def spike_channels(model: LoadedModel, seqs, batch_size: int, spike: SpikeLocation,
                   heads: list[list[HeadRow]]) -> tuple[LifeCycleValues, Silu, dict[str, SinkKeyRank]]:
    """Signed spike-channel values at the spike position per block (life cycle), SiLU near identity of FFN
    gates, and the effective rank of the keys at the sink position of sink heads."""
    tracked = np.asarray(spike.channels[:16] or [spike.channel])
    run = passes.spike_channel_pass(model, spike.position, spike.channel, tracked)
    values = passes.run_batched(run, model.params, seqs, batch_size)
    life_cycle = LifeCycleValues(position=spike.position, channel=spike.channel,
                                 residual=values["residual"].mean(0).tolist(),
                                 output=values["output"].mean(0).tolist(), channels=tracked.tolist(),
                                 channel_means=values["channel_values"].mean(0))
    silu = Silu({i: _silu_block(s, spike.position) for i, s in values["silu"].items()}, raw=values["silu"])
    return life_cycle, silu, _sink_key_ranks(model.spec, heads, values["keys0"])


def _silu_block(s: dict, pos: int) -> SiluBlock:
    return SiluBlock(spike_token_cos=float(s["cos"][:, pos].mean()),
                     spike_token_norm_ratio=float(s["norm_ratio"][:, pos].mean()),
                     other_cos=float(np.delete(s["cos"], pos, 1).mean()),
                     other_norm_ratio=float(np.delete(s["norm_ratio"], pos, 1).mean()),
                     spike_token_output_max=float(s["magnitude"][:, pos].mean()))


def _sink_key_ranks(spec: ModelSpec, heads: list[list[HeadRow]], keys0: dict) -> dict[str, SinkKeyRank]:
    ranks = {}
    for row in heads:
        for h in row:
            k0 = keys0.get(h.block)
            if h.is_sink and k0 is not None:
                rank = stats.effective_rank(k0[:, h.head // (spec.n_heads // spec.kv_heads)])
                ranks[f"{h.block}/{h.head}"] = SinkKeyRank(int(rank["rank"]), float(rank["participation_ratio"]))
    return ranks


def life_cycle_steps(life_cycle: LifeCycleValues, has_spike: bool) -> tuple[list[int], list[int]]:
    """Step-up and step-down blocks (§3.1.1) of the dominant spike channel; none without spike channels."""
    return stats.life_cycle_blocks(life_cycle.residual, life_cycle.output) if has_spike else ([], [])


def mechanism(model: LoadedModel, spike_channels: list[int], step_up_blocks: list[int]) -> Mechanism:
    """||U_k||_F per SwiGLU block (RMSNorm scale folded in), top channels' S_k eigen-structure at step-up
    blocks, and the spectral norm of block 1's W_VO (Eq. 22)."""
    top, eigen, every = {}, {}, {}
    channels = spike_channels[:8]
    for i in (range(2, model.spec.n_blocks + 1, 2) if model.spec.ffn == "swiglu" else ()):
        w = model.ffn_weights(i)
        wg, wu, wd = w["w_gate"], w["w_up"], w["w_down"]
        if model.input_norm_scale(i) is not None:
            wg, wu = stats.fold_norm_scale(model.input_norm_scale(i), wg, wu)
        norms = np.asarray(stats.uk_frobenius(wg, wu, wd))
        every[i] = norms
        top[i] = [UkChannel(int(k), float(norms[k]), float(norms[k] / max(np.median(norms), 1e-30)))
                  for k in np.argsort(norms)[::-1][:3]]
        if i in step_up_blocks and channels:
            eig = [stats.top_eigen(stats.u_matrix(wg, wu, wd, k)) for k in channels]
            eigen[i] = Eigen(channels, [e[0] for e in eig], stats.eigvec_alignment([e[1] for e in eig]))
    attn = model.attn_weights(1)
    w_vo = float(np.linalg.norm(np.asarray(stats.w_vo(attn["wv"], attn["wo"])), 2))
    return Mechanism(top, eigen, w_vo, uk_norm_all=every)


# ------------------------------------------------------------------ vocabulary probe (paper Table 2)

def vocab_probe(model: LoadedModel, seqs, criterion, position: int, sample: int) -> VocabSpikeFraction:
    """Fraction of the vocabulary that becomes a spike token at position 0, and at a later position:
    every id v is placed at position 0 of [v, context...] and at position p of [context[:p], v]; v is a
    spike token there if any block's residual at that position is massive (the probe's criterion)."""
    p = min(position, seqs.shape[1] - 1)
    context = seqs[0, : p + 1]
    vocab = model.tokenizer.vocab_size
    ids_all = np.arange(vocab, dtype=np.int32)
    if sample and sample < vocab:     # a CPU cannot run 150k ids through a 7B quickly
        ids_all = np.unique(np.linspace(0, vocab - 1, sample).astype(np.int32))
    spiky = passes.spiky_at(model, criterion)
    first, later = [], []
    for start in range(0, len(ids_all), 256):
        ids = ids_all[start:start + 256]
        at0 = np.concatenate([ids[:, None], np.tile(context[1:p + 1], (len(ids), 1))], axis=1)
        atp = np.concatenate([np.tile(context[:p], (len(ids), 1)), ids[:, None]], axis=1)
        first.append(np.asarray(spiky(model.params, jnp.asarray(at0), 0)))
        later.append(np.asarray(spiky(model.params, jnp.asarray(atp), p)))
    return VocabSpikeFraction(float(np.concatenate(first).mean()), float(np.concatenate(later).mean()),
                              int(vocab), int(len(ids_all)), p)


# ------------------------------------------------------------------ interventions

def intervention_losses(model: LoadedModel, seqs, batch_size: int, spike: SpikeLocation, step_up: list[int],
                        life_cycle: LifeCycleValues, heads: list[list[HeadRow]]) -> InterventionLosses:
    """Loss changes under Sun et al.'s zero/mean ablation of the spike channels at the (last) step-up block,
    hiding the sink position from sink heads (vs as many random non-sink heads), and StreamingLLM window
    attention keeping 0, 1 or 4 first tokens (Xiao et al. 2024)."""
    run = passes.losses(model)

    def loss(interventions: Interventions) -> float:
        return float(np.mean(passes.run_batched(run, model.params, seqs, batch_size, interventions)))

    out = InterventionLosses(baseline=loss(Interventions()))
    edit_blocks = step_up or ([spike.peak_block] if spike.channels else [])
    if spike.channels and edit_blocks:
        edit_block = edit_blocks[-1]
        zero, mean = _spike_channel_edits(model.spec, seqs.shape[1], spike, life_cycle, edit_block)
        out.spike_channels_zero, out.spike_channels_mean = loss(zero), loss(mean)
        out.spike_edit_block = edit_block
    sink_heads = {row[0].block: np.array([h.is_sink for h in row]) for row in heads}
    n_sink = int(sum(m.sum() for m in sink_heads.values()))
    if n_sink:
        out.mask_sink_heads = loss(_drop_first_key(sink_heads))
        out.mask_random_non_sink_heads = loss(_drop_first_key(_random_non_sink_heads(sink_heads, n_sink)))
        out.masked_heads = n_sink
    window = max(seqs.shape[1] // 4, 2)
    for keep in (0, 1, 4):
        out.windows[f"window_{window}_keep_{keep}"] = loss(Interventions(window=window, keep_first=keep))
    return out


def _spike_channel_edits(spec: ModelSpec, seq_len: int, spike: SpikeLocation, life_cycle: LifeCycleValues,
                         block: int) -> tuple[Interventions, Interventions]:
    """Zero and mean ablation of the tracked spike channels at every spike position after `block`; the
    mean is per (position, channel) over prompts."""
    mask = np.zeros((1, seq_len, spec.d_model), bool)
    for pos in spike.positions:
        mask[0, pos, life_cycle.channels] = True
    mean_field = np.zeros((1, seq_len, spec.d_model), np.float32)
    mean_field[0][:, life_cycle.channels] = life_cycle.channel_means[block - 1]
    return (Interventions(residual_edits=(ResidualEdit(block, mask, 0.0),)),
            Interventions(residual_edits=(ResidualEdit(block, mask, mean_field),)))


def _drop_first_key(heads_by_block: dict) -> Interventions:
    return Interventions(drop_first_key=tuple(FirstKeyMask(b, m) for b, m in heads_by_block.items()))


def _random_non_sink_heads(sink_heads: dict, n: int) -> dict:
    """As many non-sink heads as there are sink heads (fewer if the model has not enough), seed 0."""
    rng = np.random.default_rng(0)
    others = [(b, j) for b, m in sink_heads.items() for j in np.nonzero(~m)[0]]
    pick = rng.choice(len(others), size=min(n, len(others)), replace=False) if others else []
    control = {b: np.zeros(len(m), bool) for b, m in sink_heads.items()}
    for idx in pick:
        control[others[idx][0]][others[idx][1]] = True
    return control
