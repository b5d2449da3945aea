"""The probe's analyses: host-side reductions of the passes' outputs into the typed parts of a `ProbeResult`.

`block_stats` below is the gathered output of `passes.block_pass`: {"nll" [N], "blocks": {i: ...},
"heads": {i: head_stats}} over all N sequences.
"""
from __future__ import annotations

import typing

import jax.numpy as jnp
import numpy as np

from jaxsink import stats
from jaxsink.model.interventions import Interventions, ResidualEdit
from jaxsink.model.loaded import LoadedModel
from jaxsink.model.spec import ModelSpec
from jaxsink.probe import interventions_sun as sun
from jaxsink.probe import mechanism_pass, passes
from jaxsink.probe.result import (BlockRow, HeadControl, HeadRow, InterventionLosses, LifeCycle, LifeCycleValues,
                                  Mechanism, Silu, SiluBlock, SinkKeyRank, SpikeEdit, UkChannel,
                                  VocabSpikeFraction)
from jaxsink.stats.spike_tokens import life_cycles
from jaxsink.stats.trigger import channels_by_magnitude


class SpikeLocation(typing.NamedTuple):
    """Where the spike is: channels flagged in any block (and the same ordered by their largest |h| over
    blocks, largest first: review P2.9), the share of sequences flagged per position, and the (position,
    channel, block) of the largest mean top-1 |h|."""
    channels: list[int]
    by_magnitude: list[int]
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
    channels = [int(c) for c in np.nonzero(channel_hits)[0]]
    absmax = np.max([block_stats["blocks"][i]["channel_absmax"].max(0) for i in range(1, spec.n_blocks + 1)], 0)
    return SpikeLocation(
        channels=channels, by_magnitude=channels_by_magnitude(channels, absmax[channels], len(channels)),
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


# ------------------------------------------------------------------ the spike channels through the blocks

def spike_channels(model: LoadedModel, seqs, batch_size: int, spike: SpikeLocation,
                   heads: list[list[HeadRow]]) -> tuple[LifeCycleValues, Silu, dict[str, SinkKeyRank]]:
    """Signed values of the 16 largest spike channels at the spike position per block (life cycle), SiLU
    near identity of FFN gates, and the effective rank of the keys at position 0 of sink heads (the first
    version's sink-key statistic, 1 by construction under BOS: `SinkKeys.pos0_trivial_under_bos`)."""
    tracked = np.asarray(spike.by_magnitude[:16] or [spike.channel])
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


def every_life_cycle(life_cycle: LifeCycleValues, has_spike: bool) -> list[LifeCycle]:
    """Every rise-fall cycle of the dominant spike channel, not only the global peak's (review P2.7)."""
    cycles = life_cycles(life_cycle.residual, life_cycle.output) if has_spike else []
    return [LifeCycle(**c) for c in cycles]


def mechanism(model: LoadedModel, spike: SpikeLocation, cycles: list[LifeCycle], block_stats: dict) -> Mechanism:
    """||U_k||_F per SwiGLU block (RMSNorm scale folded in), S_k's spectrum at every step-up and step-down
    block for the largest spike channels, and block 1's affine W_VO with its alignment to s* (Eq. 16-22)."""
    top, every = {}, {}
    for i in (range(2, model.spec.n_blocks + 1, 2) if model.spec.ffn == "swiglu" else ()):
        norms = np.asarray(stats.uk_frobenius(*mechanism_pass.folded_ffn_weights(model, i)))
        every[i] = norms
        top[i] = [UkChannel(int(k), float(norms[k]), float(norms[k] / max(np.median(norms), 1e-30)))
                  for k in np.argsort(norms)[::-1][:3]]
    eigen = mechanism_pass.eigen_at_blocks(model, spike.by_magnitude, cycles)
    return Mechanism(top, eigen, mechanism_pass.w_vo_record(model, block_stats, eigen), uk_norm_all=every)


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
    first = np.concatenate(first)
    return VocabSpikeFraction(float(first.mean()), float(np.concatenate(later).mean()), int(vocab),
                              int(len(ids_all)), p, position_0_ids=ids_all[first].tolist())


# ------------------------------------------------------------------ interventions

def intervention_losses(model: LoadedModel, seqs, batch_size: int, spike: SpikeLocation, step_up: list[int],
                        life_cycle: LifeCycleValues, heads: list[list[HeadRow]],
                        block_stats: dict) -> InterventionLosses:
    """Loss changes under Sun et al.'s zero/mean ablation of each sequence's own spike tokens at the (last)
    step-up block, each sink head losing its own sink key vs a matched random-head control, and StreamingLLM
    window attention keeping 0, 1 or 4 first tokens (Xiao et al. 2024); `interventions_sun` says why."""
    run = passes.losses(model)

    def loss(interventions) -> float:
        return _mean_loss(run, model.params, seqs, batch_size, interventions)

    out = InterventionLosses(baseline=loss(Interventions()))
    edit_blocks = step_up or ([spike.peak_block] if spike.channels else [])
    if spike.channels and edit_blocks:
        out.spike_channels_zero, out.spike_channels_mean, out.spike_edit = _spike_ablation(
            model, seqs, batch_size, block_stats, life_cycle.channels, edit_blocks[-1], loss)
    sink_heads = {row[0].block: np.array([h.is_sink for h in row]) for row in heads}
    n_sink = int(sum(m.sum() for m in sink_heads.values()))
    if n_sink:
        keys = {i: sun.sink_keys(h["alpha_first_half"].mean(0)) for i, h in block_stats["heads"].items()}
        out.mask_sink_heads = loss(sun.drop_keys(sink_heads, keys))
        rng = np.random.default_rng(0)
        controls = [sun.matched_control(sink_heads, rng) for _ in range(sun.CONTROL_DRAWS)]
        out.mask_random_heads = float(np.mean([loss(sun.drop_keys(c, keys)) for c in controls]))
        out.masked_heads = n_sink
        out.control = HeadControl(heads=n_sink, draws=sun.CONTROL_DRAWS, drawn_from="all heads, without replacement",
                                  key="each head's argmax of alpha over k < T/2")
    window = max(seqs.shape[1] // 4, 2)
    for keep in (0, 1, 4):
        out.windows[f"window_{window}_keep_{keep}"] = loss(Interventions(window=window, keep_first=keep))
    return out


def _mean_loss(run, params, seqs, batch_size: int, interventions) -> float:
    """Mean per-sequence NLL under `interventions`: one `Interventions` for every batch, or a function of
    the batch's rows (a slice) -> `Interventions`, for edits that differ per sequence."""
    per_batch = interventions if callable(interventions) else (lambda rows: interventions)
    nll = [np.asarray(run(params, jnp.asarray(seqs[s:s + batch_size]), per_batch(slice(s, s + batch_size))))
           for s in range(0, len(seqs), batch_size)]
    return float(np.mean(np.concatenate(nll)))


def _spike_ablation(model: LoadedModel, seqs, batch_size: int, block_stats: dict, channels: list[int], block: int,
                    loss) -> tuple[float, float, SpikeEdit]:
    """Sun et al.'s zero and mean ablation at `block`: each sequence's own spike tokens (flagged there) get
    the tracked channels overwritten with 0 or with their mean over all spike tokens."""
    flags = block_stats["blocks"][block]["token_mask"]
    values = passes.run_batched(passes.residual_channels(model, block, np.asarray(channels)), model.params, seqs,
                                batch_size)
    mask, mean = sun.sun_ablation(flags, values, channels, model.spec.d_model)

    def edit(value):
        return lambda rows: Interventions(residual_edits=(ResidualEdit(block, mask[rows], value),))
    shift = float(np.abs(values[flags] - mean[channels]).mean() / max(np.abs(values[flags]).mean(), 1e-30)) \
        if flags.any() else 0.0
    return loss(edit(0.0)), loss(edit(mean)), SpikeEdit(block, int(flags.sum()), len(channels), shift)
