"""`jaxsink probe`: the paper's analyses of one model (trained here or imported) on real text.

Pipeline: text -> non-overlapping windows of `seq_len` tokens drawn at random (seeded) over the whole text
(BOS prepended when asked; `sampling.py`) -> block pass (per-block magnitudes, massive-activation masks,
per-head sink statistics, position-0 vectors; post-norm read before the norm) -> spike channels (by
magnitude) / token -> spike-channel pass (spike-channel values per block for every rise-fall life cycle,
SiLU near-identity) -> weight analysis (||U_k||_F; S_k spectra at step-up and step-down blocks and W_VO:
`mechanism_pass.py`) -> vocabulary probe -> near-constancy and sink-key rank over real spike tokens
(`spike_token_pass.py`) -> interventions (`interventions_sun.py`) -> a `ProbeResult`, written as
`OUT/probe.json` (schema in `docs/probe.md`), and PNG plots. Jitted passes: `passes.py`; reductions:
`analyses.py`; the result type: `result.py`; figures: `plots.py`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

import numpy as np
from tqdm import tqdm

from jaxsink import stats
from jaxsink.model.loaded import LoadedModel
from jaxsink.probe import analyses, passes, plots
from jaxsink.probe.result import ProbeResult, ProbeSummary, SinkKeys
from jaxsink.probe.sampling import Sample, sample_windows
from jaxsink.probe.spike_token_pass import spike_token_statistics
from jaxsink.stats.per_sequence import per_sequence
from jaxsink.stats.sink_validity import sink_ratio_defined
from jaxsink.train.setup import load_trained
from jaxsink.workdir import load_data, load_workdir_config

log = logging.getLogger("jaxsink")


@dataclasses.dataclass(frozen=True)
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
    """The first `num` consecutive non-overlapping chunks (BOS prepended when asked)."""
    return sample_windows(tokenizer.encode(text), seq_len, num, bos, tokenizer.bos_id, method="consecutive").tokens


def probe(model: LoadedModel, text: str, out_dir, opts: ProbeOptions | None = None) -> ProbeResult:
    """Every analysis of `model` on `text`; writes OUT/probe.json (and the plots) and returns the result."""
    opts = opts or ProbeOptions()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    bos = model.bos if opts.bos is None else opts.bos
    sample = sample_windows(model.tokenizer.encode(text), opts.seq_len, opts.num_sequences, bos,
                            model.tokenizer.bos_id, seed=opts.sample_seed, method=opts.sample)
    with tqdm(total=6, desc="probe", disable=not opts.progress, unit="stage") as bar:
        result = _analyse(model, sample, opts, bos, bar)
    result.wall_seconds = time.perf_counter() - t_start
    if opts.plots:
        result.plots = plots.write_all(model, sample.tokens, result, out_dir)
    (out_dir / "probe.json").write_text(json.dumps(result.to_json(), indent=1))
    return result


def _analyse(model: LoadedModel, sample: Sample, opts: ProbeOptions, bos: bool, bar) -> ProbeResult:
    spec, seqs = model.spec, sample.tokens
    criterion, block_stats = choose_criterion(model, seqs, opts)
    bar.update(1)
    blocks = analyses.block_table(block_stats, spec)
    spike = analyses.spike_location(block_stats, spec, blocks)
    heads = analyses.head_table(block_stats, spec)
    sink_ratio, sink1_gu = analyses.sink_ratios(block_stats, opts.sink_eps)
    bar.update(1)
    life_cycle, silu, pos0_key_ranks = analyses.spike_channels(model, seqs, opts.batch_size, spike, heads)
    step_up, step_down = analyses.life_cycle_steps(life_cycle, bool(spike.channels))
    cycles = analyses.every_life_cycle(life_cycle, bool(spike.channels))
    bar.update(1)
    mechanism = analyses.mechanism(model, spike, cycles, block_stats)
    bar.update(1)
    vocab = analyses.vocab_probe(model, seqs, criterion, opts.vocab_position, opts.vocab_sample) \
        if opts.vocab else None
    near = spike_token_statistics(model, seqs, block_stats, heads, step_up, spike.peak_block, bos, opts,
                                  vocab.position_0_ids if vocab else ())
    bar.update(1)
    losses = analyses.intervention_losses(model, seqs, opts.batch_size, spike, step_up, life_cycle, heads,
                                          block_stats) if opts.interventions else None
    bar.update(1)
    return ProbeResult(
        source=model.source, model=spec, seq_len=opts.seq_len, num_sequences=int(len(seqs)),
        sample=sample.record(), bos=bos, sink_eps=opts.sink_eps, criterion=criterion,
        loss=float(np.mean(block_stats["nll"])), spike_top1=analyses.spike_top1(block_stats, spec),
        spike_channels=spike.channels, spike_positions=spike.positions, spike_position=spike.position,
        spike_channel=spike.channel, spike_peak_block=spike.peak_block,
        spike_top1_over_median=spike.top1_over_median, spike_channels_by_magnitude=spike.by_magnitude,
        step_up_blocks=step_up, step_down_blocks=step_down, life_cycles=cycles, sink_ratio=sink_ratio,
        sink1_gu=sink1_gu, sink_ratio_defined=sink_ratio_defined(opts.seq_len, opts.sink_eps), blocks=blocks,
        heads=heads, per_sequence=per_sequence(block_stats, spec.n_blocks, spike.peak_block, opts.sink_eps),
        life_cycle_values=life_cycle, silu=silu,
        sink_keys=SinkKeys(near.spike_tokens.sink_keys if near.spike_tokens else None, pos0_key_ranks),
        near_constancy=near, mechanism=mechanism, vocab_spike_fraction=vocab, interventions=losses)


def block_statistics(model: LoadedModel, seqs, opts: ProbeOptions, criterion: stats.SpikeCriterion) -> dict:
    run = passes.block_pass(model, opts.seq_len, opts.sink_eps, criterion)
    return passes.run_batched(run, model.params, seqs, opts.batch_size)


def choose_criterion(model: LoadedModel, seqs, opts: ProbeOptions) -> tuple[stats.SpikeCriterion, dict]:
    """Sun et al.'s criterion, unless asked for the relative one, or (auto) Sun's flags nothing: small models
    rarely reach |h| > 100. Returns the criterion and the block statistics computed with it."""
    sun = stats.SpikeCriterion()
    if opts.criterion == "relative":
        relative = stats.SpikeCriterion.relative()
        return relative, block_statistics(model, seqs, opts, relative)
    block_stats = block_statistics(model, seqs, opts, sun)
    flagged = any(b["token_mask"].any() for b in block_stats["blocks"].values())
    if opts.criterion == "sun" or flagged:
        return sun, block_stats
    relative = stats.SpikeCriterion.relative()
    return relative, block_statistics(model, seqs, opts, relative)


def probe_workdir_summary(workdir, **options) -> ProbeSummary:
    """What a sweep row needs: the probe of a trained workdir on its held-out text at T = 64, or at the
    trained length where that is shorter (Table 8's short rows are probed where they were trained)."""
    model = load_trained(workdir)
    cfg = load_workdir_config(workdir)
    _, splits = load_data(cfg, pathlib.Path(workdir))
    text = model.tokenizer.decode(splits.heldout)
    options.setdefault("seq_len", min(64, cfg.train.seq_len))
    opts = ProbeOptions(vocab=False, interventions=False, progress=False, **options)
    return probe(model, text, pathlib.Path(workdir) / "probe", opts).summary()
