"""`jaxsink sweep EXPERIMENT --scale tiny --workdir DIR`: train every variant of a paper table, probe each with
the same code, and write `results.json` and `report.md` (the paper's Perplexity | Sink ratio | Spike table,
ours beside the paper's, plus plots).

Re-running skips finished variants (their `result.json` exists) and resumes an interrupted one (its
training resumes from the last checkpoint); a variant folder that holds a run with another config (say,
more steps) is refused before any training, so old numbers are never reported as new ones. Every variant
shares the seed and therefore the data order.

`--seeds N` (N > 1) trains every variant under seeds 0..N-1 (`train.seed`: initialisation and data order) in
`DIR/VARIANT/seed_S`; the variant's row is then the mean over seeds with the per-seed values kept beside it
(`seeds`), so that claims are judged on intervals over seeds (`jaxsink.claims`, `jaxsink.stats.uncertainty`).
"""
from __future__ import annotations

import json
import logging
import pathlib
import sys

from jaxsink import experiments
from jaxsink.config import ConfigError, load_config, to_dict, validate
from jaxsink.impact import sweep_columns
from jaxsink.probe.pipeline import probe_workdir_summary
from jaxsink.report import write_report
from jaxsink.stats.seeds import combine_seeds
from jaxsink.train.loop import train
from jaxsink.train.stats import training_stats
from jaxsink.workdir import check_workdir_config

log = logging.getLogger("jaxsink")

# base config per scale; tiny adds the CPU recipe under which sinks and a position-0 spike appear
BASES = {"tiny": "tiny_sinks", "small": "small", "paper": "paper_7b",
         "bb": "bb_cpu"}     # bb: Guo et al.'s Bigram-Backcopy testbed, reduced for 2 CPU cores
STATS_EVERY = {"tiny": 100, "small": 500, "paper": 1000, "bb": 100}


def plan(name: str, scale: str, only=None, extra=()) -> list[tuple[str, list[str]]]:
    """[(variant, overrides)] in the experiment's order; `only` selects a subset by name. Every variant's
    config is loaded and validated here, so a plan printed by `--dry-run` is one that would run."""
    if scale not in BASES:
        raise ConfigError(f"--scale {scale!r}: choose from {sorted(BASES)}")
    exp = experiments.load(name)
    base_name = BASES[scale]
    base = load_config(base_name, list(extra))    # variants scale from what will really run
    variants = exp.variants(scale, base)
    if only:
        unknown = sorted(set(only) - set(variants))
        if unknown:
            raise ConfigError(f"--only: {name} has no variant {unknown[0]!r}; it has {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in only}
    common = [f"stats.every={STATS_EVERY[scale]}", *extra]
    out = []
    for variant, overrides in variants.items():
        validate(load_config(base_name, [*common, *overrides]))    # before any training or printing
        out.append((variant, [*common, *overrides]))
    return out


def seed_runs(variant: str, overrides: list[str], seeds: int) -> list[tuple[str, list[str]]]:
    """[(folder relative to the sweep's workdir, overrides)] of one variant: one folder per seed when
    seeds > 1 (seed S overrides train.seed), the variant's own folder otherwise (the layout of old sweeps)."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least 1")
    if seeds == 1:
        return [(_safe(variant), list(overrides))]
    return [(f"{_safe(variant)}/seed_{s}", [*overrides, f"train.seed={s}"]) for s in range(seeds)]


def sweep(name: str, scale: str, workdir, *, only=None, dry_run: bool = False, extra=(), progress: bool = True,
          seeds: int = 1, impact: bool = False):
    """`impact`: also run `jaxsink impact`'s small grid on every trained variant (`jaxsink.impact.sweep_columns`)
    unless it has an impact.json already; the report's deployment-cost columns come from those files."""
    workdir = pathlib.Path(workdir)
    per_variant = [[(v, folder, ov) for folder, ov in seed_runs(v, overrides, seeds)]
                   for v, overrides in plan(name, scale, only, extra)]
    runs = [run for s in range(seeds) for run in (rows[s] for rows in per_variant)]   # seed-major: an
    # interrupted sweep leaves whole seeds of every variant, not all seeds of the first variants
    base_name = BASES[scale]
    if dry_run:
        return {"experiment": name, "scale": scale, "plan": [
            {"variant": v, "command": f"jaxsink train --config {base_name} --workdir {workdir / folder} "
                                      + " ".join(f"--config.{o}" for o in ov)} for v, folder, ov in runs]}
    configs = {folder: load_config(base_name, overrides) for _, folder, overrides in runs}
    for folder, cfg in configs.items():   # before any training: valid configs, no finished run reused by mistake
        validate(cfg)
        check_workdir_config(cfg, workdir / folder)
    per_seed = {}
    for variant, folder, overrides in runs:
        vdir, cfg = workdir / folder, configs[folder]
        done = vdir / "result.json"
        if impact and done.exists() and not (vdir / sweep_columns.IMPACT_DIR / "impact.json").exists():
            sweep_columns.run_variant(vdir, progress)
        if done.exists():
            per_seed.setdefault(variant, []).append(json.loads(done.read_text()))
            log.info("%s: done already, skipped", folder)
            continue
        log.info("%s: training (%s)", folder, " ".join(overrides))
        summary = train(cfg, vdir, progress=progress, stats=training_stats(cfg))
        result = {"perplexity": summary["perplexity"], "params": summary["params"], "heldout_loss": summary["heldout_loss"],
                  "bits_per_byte": summary["bits_per_byte"], **probe_workdir_summary(vdir).to_json(),
                  "tokens": (summary["step"] + 1) * cfg.train.batch_size * cfg.train.seq_len,
                  "seed": cfg.train.seed, "folder": folder, "min_lr_ratio": cfg.train.min_lr_ratio,
                  "config_overrides": overrides, "config": to_dict(cfg)}
        done.write_text(json.dumps(result, indent=2))
        if impact:
            sweep_columns.run_variant(vdir, progress)
        per_seed.setdefault(variant, []).append(result)
    results = {variant: combine_seeds(rows) for variant, rows in per_seed.items()}
    _attach_impact(workdir, results, {rows[0][0]: [workdir / f for _, f, _ in rows] for rows in per_variant})
    write_report(workdir, name, scale, results, experiments.load(name))
    return {"experiment": name, "scale": scale, "workdir": str(workdir),
            "report": str(workdir / "report.md"), "variants": {
                k: {m: v[m] for m in ("perplexity", "sink_ratio", "spike", "spike_top1_over_median", "seeds",
                                      "n_seeds", "per_sequence_sd", "n_sequences") if m in v}
                for k, v in results.items()}}


def compile_only(name: str, scale: str, topology: str, *, only=None, extra=(), seeds: int = 1,
                 slices: int = 1) -> dict:
    """`sweep --compile-only --topology T`: every variant's training step (plain and with statistics)
    compiled for T from shapes only (`jaxsink.aot`), nothing trained: HBM per chip against the chip's,
    and the estimated chip-hours of each run and of the sweep (variants x seeds). All estimates. A variant
    that does not fit is named in a one-line error after the table."""
    from jaxsink import aot
    runs = plan(name, scale, only, extra)
    seed_runs(runs[0][0], [], seeds)            # checks --seeds before any compile
    topo, devices = aot.prepare(topology, slices)
    summaries = []
    for variant, overrides in runs:
        aot.progress(f"{name}/{variant}: {' '.join(overrides)}")
        run, reports = aot.compile_all(load_config(BASES[scale], overrides), devices, ("train", "stats"))
        summaries.append(aot.summarize(variant, topo, run, reports))
    total = seeds * sum(s.estimated_chip_hours for s in summaries)
    print(_compile_table(name, topo, summaries, seeds, total), file=sys.stderr)
    for s in summaries:
        aot.check_fits(s)
    return {"experiment": name, "scale": scale, "topology": topo.name, "seeds": seeds,
            "estimated_chip_hours": total, "variants": {s.config: {
                "hbm_per_chip_bytes": {p.name: p.total_bytes for p in s.programs},
                "estimated_step_seconds": s.estimated_step_seconds, "estimated_mfu": s.estimated_mfu,
                "estimated_chip_hours": s.estimated_chip_hours} for s in summaries}}


def _compile_table(name, topo, summaries, seeds, total) -> str:
    from jaxsink.aot import GiB
    cap = summaries[0].hbm_per_chip_bytes
    rows = [f"{name} on {topo.name} ({summaries[0].chips} chips{f', {cap / GiB:.1f} GiB HBM each' if cap else ''}); "
            "times are XLA cost-model estimates", "| variant | train step GiB/chip | + statistics GiB/chip | fits | "
            "est. step s | est. MFU | est. chip-hours per run |", "|---|---|---|---|---|---|---|"]
    for s in summaries:
        mem = [p.total_bytes / GiB for p in s.programs]
        fits = all(not p.error and (not cap or p.total_bytes <= cap) for p in s.programs)
        rows.append(f"| {s.config} | {mem[0]:.2f} | {mem[-1]:.2f} | {'yes' if fits else 'NO'} | "
                    f"{s.estimated_step_seconds:.3f} | {100 * s.estimated_mfu:.1f}% | {s.estimated_chip_hours:,.1f} |")
    rows.append(f"sweep: {len(summaries)} variants x {seeds} seed(s) = estimated {total:,.1f} chip-hours")
    return "\n".join(rows)


def report_finished(name: str, scale: str, workdir, only=None) -> dict:
    """Write results.json and report.md from the runs that have finished (their result.json), training
    nothing: the record of a sweep that could not run every seed (the report's seed column says how many)."""
    workdir = pathlib.Path(workdir)
    results = {}
    for variant, _ in plan(name, scale, only):
        folder = workdir / _safe(variant)
        rows = [json.loads(p.read_text()) for p in sorted(folder.glob("seed_*/result.json"))]
        if not rows and (folder / "result.json").exists():
            rows = [json.loads((folder / "result.json").read_text())]
        if rows:
            results[variant] = combine_seeds(rows)
            _attach_impact(workdir, results, {variant: [folder, *sorted(folder.glob("seed_*"))]})
    if not results:
        raise ConfigError(f"{workdir} holds no finished run of {name}")
    write_report(workdir, name, scale, results, experiments.load(name))
    return {"experiment": name, "report": str(workdir / "report.md"),
            "variants": {k: {"n_seeds": v["n_seeds"], "perplexity": v["perplexity"]} for k, v in results.items()}}


def _attach_impact(workdir, results: dict, folders: dict):
    """results[variant]["impact"]: the deployment-cost columns of its run folders' impact.json (if any)."""
    for variant, fs in folders.items():
        cols = sweep_columns.read(fs)
        if variant in results and cols:
            results[variant]["impact"] = cols


def _safe(variant: str) -> str:
    return variant.replace("/", "_")
