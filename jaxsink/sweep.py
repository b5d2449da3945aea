"""`jaxsink sweep EXPERIMENT --scale tiny --workdir DIR`: train every variant of a paper table, probe each with
the same code, and write `results.json` and `report.md` (the paper's Perplexity | Sink ratio | Spike table,
ours beside the paper's, plus plots).

Re-running skips finished variants (their `result.json` exists) and resumes an interrupted one (its
training resumes from the last checkpoint); a variant folder that holds a run with another config (say,
more steps) is refused before any training, so old numbers are never reported as new ones. Every variant
shares the seed and therefore the data order.
"""
from __future__ import annotations

import json
import logging
import pathlib

from jaxsink import experiments
from jaxsink.config import ConfigError, load_config, to_dict, validate
from jaxsink.probe.pipeline import probe_workdir_summary
from jaxsink.report import write_report
from jaxsink.train.loop import train
from jaxsink.train.stats import training_stats
from jaxsink.workdir import check_workdir_config

log = logging.getLogger("jaxsink")

# base config per scale; tiny adds the CPU recipe under which sinks and a position-0 spike appear
BASES = {"tiny": "tiny_sinks", "small": "small", "paper": "paper_7b"}
STATS_EVERY = {"tiny": 100, "small": 500, "paper": 1000}


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


def sweep(name: str, scale: str, workdir, *, only=None, dry_run: bool = False, extra=(), progress: bool = True):
    workdir = pathlib.Path(workdir)
    steps = plan(name, scale, only, extra)
    base_name = BASES[scale]
    if dry_run:
        return {"experiment": name, "scale": scale, "plan": [
            {"variant": v, "command": f"jaxsink train --config {base_name} --workdir {workdir / _safe(v)} "
                                      + " ".join(f"--config.{o}" for o in ov)} for v, ov in steps]}
    configs = {variant: load_config(base_name, overrides) for variant, overrides in steps}
    for variant, cfg in configs.items():   # before any training: no finished run reused by mistake
        check_workdir_config(cfg, workdir / _safe(variant))
    results = {}
    for variant, overrides in steps:
        vdir, cfg = workdir / _safe(variant), configs[variant]
        done = vdir / "result.json"
        if done.exists():
            results[variant] = json.loads(done.read_text())
            log.info("%s: done already, skipped", variant)
            continue
        log.info("%s: training (%s)", variant, " ".join(overrides))
        summary = train(cfg, vdir, progress=progress, stats=training_stats(cfg))
        result = {"perplexity": summary["perplexity"], "params": summary["params"], "heldout_loss": summary["heldout_loss"],
                  "bits_per_byte": summary["bits_per_byte"], **probe_workdir_summary(vdir).to_json(),
                  "tokens": (summary["step"] + 1) * cfg.train.batch_size * cfg.train.seq_len,
                  "config_overrides": overrides, "config": to_dict(cfg)}
        done.write_text(json.dumps(result, indent=2))
        results[variant] = result
    write_report(workdir, name, scale, results, experiments.load(name))
    return {"experiment": name, "scale": scale, "workdir": str(workdir),
            "report": str(workdir / "report.md"), "variants": {
                k: {m: v[m] for m in ("perplexity", "sink_ratio", "spike")} for k, v in results.items()}}


def _safe(variant: str) -> str:
    return variant.replace("/", "_")
