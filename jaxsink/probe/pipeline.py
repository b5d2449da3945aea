"""`jaxsink probe`: the paper's analyses of one model (trained here or imported) on real text.

Pipeline: text -> consecutive non-overlapping chunks of `seq_len` tokens (BOS prepended when asked) ->
block pass (per-block magnitudes, massive-activation masks, per-head sink statistics, position-0 vectors) ->
spike channels / token, step-up and step-down blocks -> spike-channel pass (spike-channel values per block for
the life cycle, SiLU near-identity, sink keys) -> weight analysis (||U_k||_F, S_k eigenvectors, W_VO) ->
vocabulary probe -> interventions -> a `ProbeResult`, written as `OUT/probe.json` (schema in
`docs/probe.md`), and PNG plots. Jitted passes: `passes.py`; reductions: `analyses.py`; the result type:
`result.py`; figures: `plots.py`.
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
from jaxsink.data import DataError
from jaxsink.model.loaded import LoadedModel
from jaxsink.probe import analyses, passes, plots
from jaxsink.probe.result import ProbeResult, ProbeSummary
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
    plots: bool = True
    progress: bool = True


def sequences(tokenizer, text: str, seq_len: int, num: int, bos: bool) -> np.ndarray:
    """Consecutive non-overlapping chunks; with BOS each chunk holds seq_len-1 text tokens after BOS."""
    ids = np.asarray(tokenizer.encode(text), np.int32)
    body = seq_len - 1 if bos else seq_len
    n = min(len(ids) // body, num)
    if n == 0:
        raise DataError(f"probe text has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    chunks = ids[: n * body].reshape(n, body)
    if bos:
        chunks = np.concatenate([np.full((n, 1), tokenizer.bos_id, np.int32), chunks], axis=1)
    return chunks


def probe(model: LoadedModel, text: str, out_dir, opts: ProbeOptions | None = None) -> ProbeResult:
    """Every analysis of `model` on `text`; writes OUT/probe.json (and the plots) and returns the result."""
    opts = opts or ProbeOptions()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    bos = model.bos if opts.bos is None else opts.bos
    seqs = sequences(model.tokenizer, text, opts.seq_len, opts.num_sequences, bos)
    with tqdm(total=6, desc="probe", disable=not opts.progress, unit="stage") as bar:
        result = _analyse(model, seqs, opts, bos, bar)
    result.wall_seconds = time.perf_counter() - t_start
    if opts.plots:
        result.plots = plots.write_all(model, seqs, result, out_dir)
    (out_dir / "probe.json").write_text(json.dumps(result.to_json(), indent=1))
    return result


def _analyse(model: LoadedModel, seqs, opts: ProbeOptions, bos: bool, bar) -> ProbeResult:
    spec = model.spec
    criterion, block_stats = choose_criterion(model, seqs, opts)
    bar.update(1)
    blocks = analyses.block_table(block_stats, spec)
    spike = analyses.spike_location(block_stats, spec, blocks)
    heads = analyses.head_table(block_stats, spec)
    sink_ratio, sink1_gu = analyses.sink_ratios(block_stats, opts.sink_eps)
    bar.update(1)
    life_cycle, silu, sink_keys = analyses.spike_channels(model, seqs, opts.batch_size, spike, heads)
    step_up, step_down = analyses.life_cycle_steps(life_cycle, bool(spike.channels))
    bar.update(1)
    mechanism = analyses.mechanism(model, spike.channels, step_up)
    bar.update(1)
    vocab = analyses.vocab_probe(model, seqs, criterion, opts.vocab_position, opts.vocab_sample) \
        if opts.vocab else None
    bar.update(1)
    losses = analyses.intervention_losses(model, seqs, opts.batch_size, spike, step_up, life_cycle, heads) \
        if opts.interventions else None
    bar.update(1)
    return ProbeResult(
        source=model.source, model=spec, seq_len=opts.seq_len, num_sequences=int(len(seqs)), bos=bos,
        sink_eps=opts.sink_eps, criterion=criterion, loss=float(np.mean(block_stats["nll"])),
        spike_top1=analyses.spike_top1(block_stats, spec), spike_channels=spike.channels,
        spike_positions=spike.positions, spike_position=spike.position, spike_channel=spike.channel,
        spike_peak_block=spike.peak_block, spike_top1_over_median=spike.top1_over_median,
        step_up_blocks=step_up, step_down_blocks=step_down, sink_ratio=sink_ratio, sink1_gu=sink1_gu,
        blocks=blocks, heads=heads, life_cycle_values=life_cycle, silu=silu, sink_keys=sink_keys,
        near_constancy=analyses.near_constancy(block_stats, spec, step_up), mechanism=mechanism,
        vocab_spike_fraction=vocab, interventions=losses)


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
    """What a sweep row needs: the probe of a trained workdir on its held-out text at T = 64."""
    model = load_trained(workdir)
    _, splits = load_data(load_workdir_config(workdir), pathlib.Path(workdir))
    text = model.tokenizer.decode(splits.heldout)
    opts = ProbeOptions(vocab=False, interventions=False, progress=False, **options)
    return probe(model, text, pathlib.Path(workdir) / "probe", opts).summary()
